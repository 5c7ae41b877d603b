package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/app/access"
)

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage the API tokens of the GraphQL API",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newTokenCreateCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var tenant, name string
	cmd := &cobra.Command{
		Use:   "create --tenant NAME [--name LABEL]",
		Short: "Create an API token for a tenant and print it, once",
		Long: `Create an API token for a tenant in the configured store and print it on standard output, alone, so
that scripts can capture it. Only a digest of the token is stored: it cannot be shown again.`,
		Example: `  export JOBMILL_TOKEN=$(jobmill token create --tenant acme --name ci)
  jobmill token create --tenant acme --transport postgres --postgres-url postgres://jobmill@db/jobmill`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := access.ValidateTenant(tenant); err != nil {
				return fmt.Errorf("--tenant: %w", err)
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			quietByDefault(cmd, &cfg)
			svc, err := openService(cmd.Context(), cfg, newLogger(cfg))
			if err != nil {
				return err
			}
			defer svc.Close()
			plain, tok, err := svc.App.Tokens.Create(cmd.Context(), tenant, name)
			if err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), plain)
			fmt.Fprintf(cmd.ErrOrStderr(), "Created token %s for tenant %s. Keep it safe: it is shown only this once and cannot be shown again.\n",
				tok.ID, tok.Tenant)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant the token acts for (1-64 letters, digits, '.', '_' or '-')")
	cmd.Flags().StringVar(&name, "name", "", "label to recognise the token by, e.g. where it is used")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}
