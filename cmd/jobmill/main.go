// Command jobmill runs the engine (serve), submits and inspects jobs (submit, status, cancel), shows the
// original example end to end (demo) and measures throughput (bench).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/jobtypes/invoices"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
	"github.com/jobmill/jobmill/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jobmill:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "jobmill",
		Short:         "A workflow engine for jobs that fan out: step 1 → many sub-jobs → step 3",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	config.RegisterFlags(root.PersistentFlags())
	root.AddCommand(newServeCommand(), newSubmitCommand(), newStatusCommand(), newCancelCommand(), newDemoCommand(), newBenchCommand(), newDevCommand())
	root.AddCommand(newWatchCommand(), newTokenCommand(), newProjectionsCommand())
	return root
}

// loadConfig reads the configuration for a command from file, environment and the flags the user set.
func loadConfig(cmd *cobra.Command) (config.Config, error) {
	fs := pflag.NewFlagSet("all", pflag.ContinueOnError)
	fs.AddFlagSet(cmd.Flags())
	fs.AddFlagSet(cmd.InheritedFlags())
	return config.Load("", fs)
}

// newLogger logs to stderr at the configured level.
func newLogger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// builtinTypes registers the job types shipped with jobmill.
func builtinTypes(cfg config.Config) *jobtype.Registry {
	reg := jobtype.NewRegistry()
	reg.MustRegister(invoices.Definition(cfg.OutboxDir))
	reg.MustRegister(synthetic.Definition(jobtype.Policy{}))
	return reg
}

// withService loads the configuration and opens the engine without running its roles, for commands
// that act on the job store directly.
func withService(cmd *cobra.Command, fn func(cfg config.Config, svc *service.Service) error) error {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	svc, err := openService(cmd.Context(), cfg, newLogger(cfg))
	if err != nil {
		return err
	}
	defer svc.Close()
	return fn(cfg, svc)
}

// startService opens the engine and runs its roles in the background until ctx ends. wait returns what
// Run returned; call it after cancelling ctx, before Close.
func startService(ctx context.Context, cfg config.Config) (svc *service.Service, wait func() error, err error) {
	svc, err = openService(ctx, cfg, newLogger(cfg))
	if err != nil {
		return nil, nil, err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	select {
	case <-svc.Running():
	case err := <-runErr:
		_ = svc.Close()
		return nil, nil, err
	}
	var once sync.Once
	var result error
	wait = func() error {
		once.Do(func() { result = <-runErr })
		return result
	}
	return svc, wait, nil
}

// quietByDefault keeps the engine's info logs out of interactive commands unless asked for.
func quietByDefault(cmd *cobra.Command, cfg *config.Config) {
	if !cmd.Flags().Changed("log-level") && os.Getenv(config.EnvPrefix+"LOG_LEVEL") == "" {
		cfg.LogLevel = "warn"
	}
}

// openService builds the engine for a command without running its roles.
func openService(ctx context.Context, cfg config.Config, logger *slog.Logger) (*service.Service, error) {
	svc, err := service.New(ctx, cfg, service.Options{Types: builtinTypes(cfg), Logger: logger})
	if err != nil {
		var cfgErr *config.Error
		if errors.As(err, &cfgErr) {
			return nil, err
		}
		return nil, fmt.Errorf("start engine: %w", err)
	}
	return svc, nil
}
