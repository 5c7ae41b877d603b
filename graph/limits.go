package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// Shape limits, checked before validation. The token limit alone does not bound the work a document
// causes before the complexity limit (which runs after validation) can refuse it:
//   - validation compares the fields of a selection set that share a response name pairwise
//     (OverlappingFieldsCanBeMerged), so one field repeated thousands of times costs seconds of CPU;
//   - the complexity calculation expands every fragment spread without memoizing, so fragments that
//     spread the next one twice, forty levels deep, never finish.
//
// No real query comes near these limits.
const (
	// maxFields bounds the fields written in a document.
	maxFields = 500
	// maxExpandedFields bounds the fields of the operations with every fragment spread expanded.
	maxExpandedFields = 5000
	// maxSameResponseName bounds how often one response name occurs in a selection set, counting the
	// fields of its inline fragments.
	maxSameResponseName = 10
	// maxFragmentUses bounds the fragment spreads and inline fragments of one selection set.
	maxFragmentUses = 50
	// maxFragmentDefinitions bounds the fragments of a document.
	maxFragmentDefinitions = 100
)

const codeShapeLimit = "QUERY_SHAPE_LIMIT_EXCEEDED"

// documentLimits refuses documents whose shape would make validation or the complexity calculation
// expensive. It parses the query once more (linear in the bounded number of tokens); a document that
// does not parse is left for the executor to report.
type documentLimits struct{ tokenLimit int }

var (
	_ graphql.HandlerExtension          = documentLimits{}
	_ graphql.OperationParameterMutator = documentLimits{}
)

func (documentLimits) ExtensionName() string                   { return "DocumentLimits" }
func (documentLimits) Validate(graphql.ExecutableSchema) error { return nil }

func (d documentLimits) MutateOperationParameters(_ context.Context, p *graphql.RawParams) *gqlerror.Error {
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: p.Query}, d.tokenLimit)
	if err != nil {
		return nil
	}
	return checkDocument(doc)
}

func shapeError(format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": codeShapeLimit}
	return err
}

func checkDocument(doc *ast.QueryDocument) *gqlerror.Error {
	if len(doc.Fragments) > maxFragmentDefinitions {
		return shapeError("a document may define at most %d fragments", maxFragmentDefinitions)
	}
	written := 0
	for _, op := range doc.Operations {
		if err := checkSelectionSet(op.SelectionSet, &written); err != nil {
			return err
		}
	}
	for _, f := range doc.Fragments {
		if err := checkSelectionSet(f.SelectionSet, &written); err != nil {
			return err
		}
	}
	x := expander{doc: doc, memo: map[string]int{}, active: map[string]bool{}}
	expanded := 0
	for _, op := range doc.Operations {
		expanded = capAdd(expanded, x.count(op.SelectionSet))
	}
	if expanded > maxExpandedFields {
		return shapeError("the document selects more than %d fields once its fragments are expanded", maxExpandedFields)
	}
	return nil
}

// checkSelectionSet checks one selection set, flattened over its inline fragments as validation
// sees it, then the selection sets of its fields; written counts the fields.
func checkSelectionSet(set ast.SelectionSet, written *int) *gqlerror.Error {
	names := map[string]int{}
	fragments := 0
	var children []ast.SelectionSet
	var walk func(ast.SelectionSet) *gqlerror.Error
	walk = func(set ast.SelectionSet) *gqlerror.Error {
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				*written++
				if *written > maxFields {
					return shapeError("a document may select at most %d fields", maxFields)
				}
				key := s.Alias
				if key == "" {
					key = s.Name
				}
				names[key]++
				if names[key] > maxSameResponseName {
					return shapeError("%q is selected more than %d times in one selection set", key, maxSameResponseName)
				}
				if len(s.SelectionSet) > 0 {
					children = append(children, s.SelectionSet)
				}
			case *ast.InlineFragment:
				fragments++
				if fragments > maxFragmentUses {
					return shapeError("a selection set may use at most %d fragments", maxFragmentUses)
				}
				if err := walk(s.SelectionSet); err != nil {
					return err
				}
			case *ast.FragmentSpread:
				fragments++
				if fragments > maxFragmentUses {
					return shapeError("a selection set may use at most %d fragments", maxFragmentUses)
				}
			}
		}
		return nil
	}
	if err := walk(set); err != nil {
		return err
	}
	for _, c := range children {
		if err := checkSelectionSet(c, written); err != nil {
			return err
		}
	}
	return nil
}

// expander counts fields with fragment spreads expanded, each fragment counted once (memo). Cycles
// and unknown fragments count nothing here: validation reports them.
type expander struct {
	doc    *ast.QueryDocument
	memo   map[string]int
	active map[string]bool
}

func (x *expander) count(set ast.SelectionSet) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			n = capAdd(n, capAdd(1, x.count(s.SelectionSet)))
		case *ast.InlineFragment:
			n = capAdd(n, x.count(s.SelectionSet))
		case *ast.FragmentSpread:
			n = capAdd(n, x.fragment(s.Name))
		}
	}
	return n
}

func (x *expander) fragment(name string) int {
	if n, ok := x.memo[name]; ok {
		return n
	}
	f := x.doc.Fragments.ForName(name)
	if f == nil || x.active[name] {
		return 0
	}
	x.active[name] = true
	n := x.count(f.SelectionSet)
	x.active[name] = false
	x.memo[name] = n
	return n
}

// capAdd adds without overflowing: past the limit, the exact count no longer matters.
func capAdd(a, b int) int {
	return min(a+b, maxExpandedFields+1)
}
