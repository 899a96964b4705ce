package main

import (
	"context"
	"fmt"
	"time"

	"github.com/relayd/relayd/status"
)

const statusMore = `With --alive, status is a liveness check for a container's HEALTHCHECK or
a supervisor: it exits 0 when the daemon answers on the status socket,
whatever its mailboxes' states (a mailbox that needs reauthorization must
not get relayd restarted: restarting fixes nothing and delays held mail),
and 1 when it does not answer within 10 seconds. Docker and podman read 1
as unhealthy.`

// aliveTimeout bounds a liveness check; a container runtime's own
// timeout (podman's and Docker's default: 30 s) is longer.
const aliveTimeout = 10 * time.Second

// statusAlive is relayd status --alive: 0 when the daemon answers on its
// status socket (socket, or status_socket from the configuration at
// cfgPath), whatever it says about the mailboxes; 1 otherwise, the code
// Docker and podman read as unhealthy (2 is reserved there).
func statusAlive(cfgPath, socket string) error {
	const notAlive = 1
	if socket == "" {
		cfg, err := loadConfig(cfgPath)
		if err != nil {
			fmt.Printf("relayd is not alive: %v\n", err)
			return exitError{notAlive}
		}
		socket = cfg.StatusSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), aliveTimeout)
	defer cancel()
	if _, err := status.NewClient(socket).Status(ctx); err != nil {
		fmt.Printf("relayd is not alive: %v\n", err)
		return exitError{notAlive}
	}
	fmt.Printf("relayd is alive: the daemon answers on %s\n", socket)
	return nil
}
