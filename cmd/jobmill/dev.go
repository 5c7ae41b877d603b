package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/adapters/kafka/devbroker"
)

// newDevCommand groups helpers for local development.
func newDevCommand() *cobra.Command {
	dev := &cobra.Command{
		Use:   "dev",
		Short: "Helpers for local development (never for production)",
		Args:  cobra.NoArgs,
	}
	dev.AddCommand(newDevKafkaCommand())
	return dev
}

func newDevKafkaCommand() *cobra.Command {
	var listen string
	var partitions int
	cmd := &cobra.Command{
		Use:   "kafka",
		Short: "Run an in-memory Kafka-protocol broker until interrupted (development only, no persistence)",
		Long: `Run a single-node, in-memory broker that speaks the Kafka protocol, so that jobmill's Kafka
transport can be tried without installing Kafka. It keeps nothing on disk: every topic, message
and consumer offset is lost when it stops. It is for development only; use a real Kafka cluster
(see docker-compose.yml) for anything else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := devbroker.Start(listen, partitions)
			if err != nil {
				return err
			}
			defer b.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "In-memory Kafka-protocol broker, FOR DEVELOPMENT ONLY: nothing is persisted, everything is lost when it stops.")
			fmt.Fprintf(out, "Listening on %s (%d partitions per auto-created topic). Point jobmill at it with:\n", strings.Join(b.Addrs(), ","), partitions)
			fmt.Fprintf(out, "  JOBMILL_KAFKA_BROKERS=%s\n", strings.Join(b.Addrs(), ","))
			fmt.Fprintln(out, "Press Ctrl-C to stop.")
			<-cmd.Context().Done()
			fmt.Fprintln(out, "Stopping the broker.")
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "address to listen on (host:port; port 0 picks a free port)")
	cmd.Flags().IntVar(&partitions, "partitions", 8, "partitions of topics created without a partition count")
	return cmd
}
