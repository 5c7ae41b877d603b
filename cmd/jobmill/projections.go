package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

// rebuildable are the projections a replay reproduces exactly. The notifier is left out on purpose: a
// replay would send every notification of the log's history again.
var rebuildable = []string{"stats", "status"}

func newProjectionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Manage the read models built from the event log (statistics, detailed status)",
	}
	cmd.AddCommand(newRebuildCommand())
	return cmd
}

func newRebuildCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "rebuild --name stats|status",
		Short: "Rebuild a projection by replaying the event log from its start",
		Long: `Empty the projection, move its consumer group back to the start of the event log and replay the
whole log into it, then exit once it has caught up. The result equals what the live projection built.

Stop the processes that run the projector role first (a running consumer of the group would move it
forward again; Kafka refuses to reset a group that has members). The manager, workers and API may keep
running: they do not read the projection's consumer group.

Works on the SQLite, PostgreSQL, MySQL and Kafka event logs. A RabbitMQ log keeps no history (each group
queue hands a message out once), so there is nothing to replay; the command says so and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(rebuildable, name) {
				return fmt.Errorf("--name must be one of %v (got %q)", rebuildable, name)
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			quietByDefault(cmd, &cfg)
			cfg.Roles = []string{config.RoleProjector}
			cfg.Workers = 0
			cfg.Notifications = config.NotifyOff
			cfg.Listen = "127.0.0.1:0"
			return rebuild(cmd, cfg, name)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "projection to rebuild: stats or status")
	return cmd
}

func rebuild(cmd *cobra.Command, cfg config.Config, name string) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	svc, err := service.New(ctx, cfg, service.Options{Types: builtinTypes(cfg), Logger: newLogger(cfg), Projections: []string{name}})
	if err != nil {
		return fmt.Errorf("start engine: %w", err)
	}
	defer svc.Close()
	if err := svc.ResetProjection(ctx, name); err != nil {
		if errors.Is(err, service.ErrNotReplayable) {
			return fmt.Errorf("%w (nothing was changed)", err)
		}
		return err
	}
	total, err := svc.ConsumerLag(ctx, name)
	if err != nil {
		return fmt.Errorf("measure the log: %w", err)
	}
	out := cmd.ErrOrStderr()
	fmt.Fprintf(out, "replaying %d events into %s\n", total, name)
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
	for {
		select {
		case err := <-runErr:
			return fmt.Errorf("the projector stopped during the rebuild: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		lag, err := svc.ConsumerLag(ctx, name)
		if err != nil {
			continue // a slow or failed measurement: ask again on the next tick
		}
		if lag == 0 {
			break
		}
		if time.Since(lastReport) >= 5*time.Second {
			fmt.Fprintf(out, "%d of %d events replayed\n", total-lag, total)
			lastReport = time.Now()
		}
	}
	cancel()
	if err := <-runErr; err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "rebuilt %s from %d events in %.1f s\n", name, total, time.Since(start).Seconds())
	return nil
}
