#!/usr/bin/env bash
# Replaces the third-party files in assets/ with the ones published on npm, byte for byte, plus their
# licences. Run it from anywhere after changing a version below, then run the package's tests.
#   GraphiQL 3 is the last major version with a UMD build; React 19 has none, hence React 18.
set -euo pipefail

GRAPHIQL_VERSION=3.8.3
REACT_VERSION=18.3.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$scratch"
npm pack --silent "graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION" >/dev/null
unpack() { mkdir "$1" && tar -xzf "$1-$2.tgz" -C "$1" --strip-components=1; }
unpack graphiql "$GRAPHIQL_VERSION"
unpack react "$REACT_VERSION"
unpack react-dom "$REACT_VERSION"

cp graphiql/graphiql.min.js graphiql/graphiql.min.css "$here/assets/"
cp react/umd/react.production.min.js "$here/assets/"
cp react-dom/umd/react-dom.production.min.js "$here/assets/"
cp graphiql/LICENSE "$here/assets/graphiql.LICENSE.txt"
cp react/LICENSE "$here/assets/react.LICENSE.txt"
cp react-dom/LICENSE "$here/assets/react-dom.LICENSE.txt"
echo "assets/ now holds graphiql $GRAPHIQL_VERSION, react and react-dom $REACT_VERSION"
