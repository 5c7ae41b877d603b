package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/jobtypes/invoices"
)

func newDemoCommand() *cobra.Command {
	var customers int64
	var manager string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the engine and the invoices job for one account manager's customers, end to end",
		Long: `Start the engine in this process, submit the invoices job (generate and email one invoice per
customer, then a summary for the account manager), follow it to the end and show what it produced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("listen") && os.Getenv(config.EnvPrefix+"LISTEN") == "" {
				cfg.Listen = "127.0.0.1:0" // a demo must not fail because port 8080 is taken
			}
			quietByDefault(cmd, &cfg)
			out := cmd.OutOrStdout()
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			svc, wait, err := startService(ctx, cfg)
			if err != nil {
				return err
			}
			defer svc.Close()

			input, _ := json.Marshal(invoices.Input{AccountManager: manager, Customers: customers})
			id, err := svc.App.Commands.SubmitJob.Handle(ctx, command.SubmitJob{Type: invoices.Name, Input: input})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "submitted invoices job %s for %d customers of %s (data in %s)\n", id, customers, manager, cfg.SQLite.Path)
			st, err := waitForJob(ctx, svc, id, out, false)
			if err != nil {
				return err
			}
			cancel()
			if err := wait(); err != nil {
				return err
			}
			printSummary(out, st)
			if st.Job.State != job.StateCompleted {
				return fmt.Errorf("job %s ended %s", id, st.Job.State)
			}
			return showOutbox(out, cfg, id, manager)
		},
	}
	cmd.Flags().Int64Var(&customers, "customers", 1000, "how many customers (one invoice each)")
	cmd.Flags().StringVar(&manager, "account-manager", "alice", "the account manager whose customers are invoiced")
	return cmd
}

func showOutbox(out interface{ Write([]byte) (int, error) }, cfg config.Config, id, manager string) error {
	dir := filepath.Join(cfg.OutboxDir, id)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	invoicesSent := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "invoice-") {
			invoicesSent++
		}
	}
	fmt.Fprintf(out, "\n%d invoice emails in %s\n", invoicesSent, dir)
	summary, err := os.ReadFile(filepath.Join(dir, "summary-"+manager+".eml"))
	if err != nil {
		return fmt.Errorf("read summary: %w", err)
	}
	fmt.Fprintf(out, "\n%s", summary)
	return nil
}
