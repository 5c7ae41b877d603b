// Starts GraphiQL for the jobmill API. The page gives the endpoint in <body data-endpoint>; queries and
// mutations go there with HTTP POST, subscriptions over a websocket to the same path (graphql-ws, i.e.
// the graphql-transport-ws protocol). The headers typed into GraphiQL's Headers editor are sent with
// every HTTP request and, for subscriptions, as the connection_init payload, so one
// {"Authorization": "Bearer jm_…"} serves both.
(function () {
  'use strict';

  var placeholder = 'Bearer PASTE_A_TOKEN_HERE';

  var endpoint = new URL(document.body.getAttribute('data-endpoint') || '/query', window.location.href);
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';

  var fetcher = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: socket.href,
    // Plain JSON over HTTP: the server answers subscriptions on the websocket (or SSE), not with
    // multipart responses.
    enableIncrementalDelivery: false,
  });

  // The untouched placeholder is left out, so that a server running with auth off is not sent a bogus
  // token.
  function withoutPlaceholder(headers) {
    var out = {};
    Object.keys(headers || {}).forEach(function (name) {
      if (!(name.toLowerCase() === 'authorization' && headers[name] === placeholder)) {
        out[name] = headers[name];
      }
    });
    return out;
  }

  function jobmillFetcher(params, opts) {
    var o = Object.assign({}, opts || {});
    o.headers = withoutPlaceholder(o.headers);
    return fetcher(params, o);
  }

  var defaultQuery = [
    '# jobmill GraphQL API. With auth required, put a token',
    '# into Headers below: {"Authorization": "Bearer jm_…"}',
    '# (create one: jobmill token create --tenant NAME).',
    '# Subscriptions use the same header over a websocket:',
    '#   subscription { jobEvents(jobId: "…") {',
    '#     seq kind step job { id state progress } } }',
    '',
    'query RecentJobs {',
    '  jobs(first: 10) {',
    '    edges {',
    '      node { id type state progress createdAt }',
    '    }',
    '    pageInfo { hasNextPage endCursor }',
    '  }',
    '}',
    '',
  ].join('\n');

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: jobmillFetcher,
      defaultQuery: defaultQuery,
      defaultHeaders: JSON.stringify({ Authorization: placeholder }, null, 2),
      defaultEditorToolsVisibility: 'headers',
      isHeadersEditorEnabled: true,
      // Headers hold the token: they stay out of localStorage unless the user turns it on in settings.
      shouldPersistHeaders: false,
      showPersistHeadersSettings: true,
    }),
  );
})();
