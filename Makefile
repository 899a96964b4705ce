# Build relayd and its packages. make deb / make rpm need scdoc (Debian's
# scdoc package) for the man pages; nfpm runs as a Go tool. make image needs
# buildah (and ca-certificates): the image is built FROM scratch.
NFPM    := go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION ?= 0.1.0~git$(shell git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || echo 0).$(COMMIT)
BUILD   := build
# A container image tag may not hold the ~ of a Debian version.
IMAGE   ?= relayd:$(subst ~,-,$(VERSION))
LDFLAGS := -s -w -X github.com/relayd/relayd/internal/daemon.Version=$(VERSION) -X github.com/relayd/relayd/internal/daemon.Commit=$(COMMIT)

.PHONY: all relayd man deb rpm image test fuzz soak clean
all: relayd man

relayd:
	mkdir -p $(BUILD)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/relayd ./cmd/relayd

man:
	mkdir -p $(BUILD)/man
	scdoc < packaging/man/relayd.8.scd | gzip -9n > $(BUILD)/man/relayd.8.gz
	scdoc < packaging/man/relayd.toml.5.scd | gzip -9n > $(BUILD)/man/relayd.toml.5.gz
	scdoc < packaging/man/relayd-setup.7.scd | gzip -9n > $(BUILD)/man/relayd-setup.7.gz
	gzip -9n < packaging/debian/changelog > $(BUILD)/changelog.gz
	gzip -9n < README.md > $(BUILD)/README.md.gz

$(BUILD)/nfpm.yaml: packaging/nfpm.yaml
	mkdir -p $(BUILD)
	sed 's|@BUILD@|$(abspath $(BUILD))|' packaging/nfpm.yaml > $@

deb: relayd man $(BUILD)/nfpm.yaml
	VERSION='$(VERSION)' $(NFPM) package -f $(BUILD)/nfpm.yaml -p deb -t $(BUILD)/

rpm: relayd man $(BUILD)/nfpm.yaml
	VERSION='$(VERSION)' $(NFPM) package -f $(BUILD)/nfpm.yaml -p rpm -t $(BUILD)/

image: relayd
	sh packaging/image/build.sh $(BUILD)/relayd '$(IMAGE)' '$(VERSION)'

test:
	go test -race -shuffle=on ./...

# The fuzzing campaign: every go test -fuzz target for FUZZTIME (default
# 10m) each, least-fuzzed first; FUZZTARGETS=N runs only the N least-fuzzed.
# Adds the time run to fuzz/hours.txt and keeps the corpus in fuzz/corpus/
# (commit both). Not part of make test; go test runs the seeds.
FUZZTIME ?= 10m
fuzz:
	FUZZTIME='$(FUZZTIME)' ./fuzz/run.sh

# The soak: relayd against real Dovecot and Postfix on loopback for
# SOAKTIME (default and at most 30m) under mixed load and faults; writes
# bench/results/soak.txt. go test runs the same driver for 60 s.
SOAKTIME ?= 30m
soak:
	RELAYD_SOAK='$(SOAKTIME)' RELAYD_SOAK_OUT=$(abspath bench/results/soak.txt) \
		go test -run '^TestSoak$$' -count=1 -timeout 45m -v ./cmd/relayd

clean:
	rm -rf $(BUILD)
