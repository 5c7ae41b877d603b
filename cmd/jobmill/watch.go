package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

func newWatchCommand() *cobra.Command {
	var remote remoteFlags
	cmd := &cobra.Command{
		Use:   "watch JOB",
		Short: "Follow a job live until it ends",
		Long: `Follow a job live until it ends: a progress bar on a terminal, plain lines otherwise, then the job's
summary. The exit status is 0 when the job completed and 1 when it failed or was cancelled.

With --server the job is followed through the server's live subscription; without it, in the
configured store.`,
		Example: `  jobmill watch 01JABCDEF --server https://jobs.example.com    # token in $JOBMILL_TOKEN
  jobmill watch 01JABCDEF --sqlite-path jobmill.db`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := remote.client(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return watchRemote(cmd, c, args[0])
			}
			return withService(cmd, func(cfg config.Config, svc *service.Service) error {
				return watchLocal(cmd, cfg, svc, args[0])
			})
		},
	}
	remote.register(cmd)
	return cmd
}

// watchLocal follows a job in the configured store.
func watchLocal(cmd *cobra.Command, cfg config.Config, svc *service.Service, id string) error {
	out := cmd.OutOrStdout()
	st, err := waitForJob(cmd.Context(), svc, id, out, true)
	if errors.Is(err, job.ErrNotFound) {
		return fmt.Errorf("no job %s in %s", id, cfg.SQLite.Path)
	}
	if err != nil {
		return err
	}
	printSummary(out, st)
	if st.Job.State != job.StateCompleted {
		return fmt.Errorf("job %s ended %s: %s", id, st.Job.State, st.Job.Error)
	}
	return nil
}
