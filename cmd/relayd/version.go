package main

import (
	"fmt"

	"github.com/relayd/relayd/internal/daemon"
)

func runVersion(args []string) error {
	fmt.Println("relayd", daemon.Version)
	return nil
}
