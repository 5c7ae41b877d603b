package config

import (
	"path/filepath"
	"testing"
)

// The example files users copy must stay valid as the configuration evolves.
func TestExampleFilesLoad(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configuration files found (err %v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := load(f, nil, func() []string { return nil })
			if err != nil {
				t.Fatalf("load %s: %v", f, err)
			}
			if c.Log == "" || c.Queue == "" || c.Store == "" {
				t.Fatalf("%s: log, queue and store must resolve, got %q %q %q", f, c.Log, c.Queue, c.Store)
			}
		})
	}
}
