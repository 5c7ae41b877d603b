package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

func newStatusCommand() *cobra.Command {
	var asJSON bool
	var lastEvents int
	var remote remoteFlags
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show the detailed status of a job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := remote.client(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return statusRemote(cmd, c, args[0], asJSON)
			}
			return withService(cmd, func(cfg config.Config, svc *service.Service) error {
				st, err := svc.App.Queries.JobStatus.Handle(cmd.Context(), args[0], "")
				if errors.Is(err, job.ErrNotFound) {
					return fmt.Errorf("no job %s in %s", args[0], cfg.SQLite.Path)
				}
				if err != nil {
					return err
				}
				detail, err := readStatusDetail(cmd.Context(), svc, args[0], lastEvents)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					out := toStatusJSON(st)
					out.Stats, out.Timeline = detail.views()
					return enc.Encode(out)
				}
				printSummary(cmd.OutOrStdout(), st)
				printDetail(cmd.OutOrStdout(), detail)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&lastEvents, "events", 10, "latest events of the job's timeline to show")
	remote.register(cmd)
	return cmd
}

func newCancelCommand() *cobra.Command {
	var reason string
	var remote remoteFlags
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a job: nothing more is dispatched and results in flight are ignored",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := remote.client(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				return cancelRemote(cmd, c, args[0], reason)
			}
			return withService(cmd, func(_ config.Config, svc *service.Service) error {
				if err := svc.App.Commands.CancelJob.Handle(cmd.Context(), command.CancelJob{JobID: args[0], Reason: reason}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "job %s cancelled\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded on the job")
	remote.register(cmd)
	return cmd
}
