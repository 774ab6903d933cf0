package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := run(ctx, []string{"-addr", "127.0.0.1:0"}, io.Discard, log); err != nil {
		t.Fatalf("run with a cancelled context = %v, want nil", err)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, args := range [][]string{
		{"-nope"},
		{"extra"},
		{"-addr", "not-an-address"},
	} {
		if err := run(context.Background(), args, io.Discard, log); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
