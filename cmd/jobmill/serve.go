package main

import (
	"github.com/spf13/cobra"
)

func newServeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the engine: manager, workers, tick and the HTTP listener in one process",
		Long: `Run every configured role (by default all of them) until interrupted.

With no configuration the engine runs on one SQLite file (jobmill-data/jobmill.db): durable and
restartable. Jobs left running by a crash resume when serve starts again on the same file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg)
			svc, err := openService(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer svc.Close()
			return svc.Run(cmd.Context())
		},
	}
}
