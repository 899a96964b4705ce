#!/usr/bin/env bash
# The fuzzing campaign (docs/testing.md, "Fuzzing"): runs every go test
# -fuzz target for FUZZTIME each (default 10m), the least-fuzzed first, one
# worker at a time (-parallel=1), and adds the time each ran to
# fuzz/hours.txt. FUZZTARGETS=N runs only the N least-fuzzed targets, to
# spread the campaign over several runs; FUZZMATCH=REGEXP only the targets
# whose package/name matches. Resumable: the corpus of each target is kept
# in fuzz/corpus/ (committed) and restored into Go's fuzz cache before it
# runs, so each run continues where the last one stopped. A crasher is
# written by go test to PKG/testdata/fuzz/TARGET/ and from then on runs as a
# regression test in every go test; this script stops with status 1 after
# the run and names it.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10m}
hours=fuzz/hours.txt
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)

# Every target: "pkgdir name".
targets=$(grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
	d=$(dirname "${f#./}")
	grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func |$d |"
done)

touch "$hours"
seconds_of() { awk -v p="$1" -v n="$2" '$1==p && $2==n {print $3; f=1} END {if (!f) print 0}' "$hours"; }

# Least-fuzzed first.
order=$(while read -r pkg name; do
	echo "$(seconds_of "$pkg" "$name") $pkg $name"
done <<<"$targets" | sort -n -k1,1 -k2 | awk '{print $2, $3}')
if [ -n "${FUZZMATCH:-}" ]; then
	order=$(grep -E -- "$FUZZMATCH" <<<"$order" || true)
fi
if [ -n "${FUZZTARGETS:-}" ]; then
	order=$(head -n "$FUZZTARGETS" <<<"$order")
fi

record() { # pkg name seconds crashed
	local tmp
	tmp=$(mktemp)
	awk -v p="$1" -v n="$2" -v s="$3" -v c="$4" -v d="$(date -u +%Y-%m-%d)" '
		BEGIN {OFS="\t"}
		/^#/ {print; next}
		$1==p && $2==n {print p, n, $3+s, $4+1, $5+c, d; f=1; next}
		{print}
		END {if (!f) print p, n, s, 1, c, d}' "$hours" >"$tmp"
	{ echo "# package	target	seconds	runs	crashers	last"; grep -v '^#' "$tmp" | sort -k1,1 -k2,2; } >"$hours"
	rm -f "$tmp"
}

failed=()
while read -r pkg name; do
	[ -n "$pkg" ] || continue
	corpus=fuzz/corpus/$pkg/$name
	mkdir -p "$cache/$module/$pkg/$name" "$corpus"
	cp -n "$corpus"/* "$cache/$module/$pkg/$name/" 2>/dev/null
	echo "== $pkg $name for $fuzztime (fuzzed $(seconds_of "$pkg" "$name")s so far)"
	log=$(mktemp)
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 10s -parallel 1 "./$pkg" >"$log" 2>&1
	rc=$?
	tail -n 4 "$log"
	[ "$rc" -eq 0 ] || cat "$log"
	# The fuzzing time as go test counts it (its last "elapsed: 1m2s").
	spent=$(grep -o 'fuzz: elapsed: [0-9hms]*' "$log" | tail -n 1 | awk '{
		d = $3; s = 0
		if (match(d, /[0-9]+h/)) s += 3600 * substr(d, RSTART, RLENGTH - 1)
		if (match(d, /[0-9]+m/)) s += 60 * substr(d, RSTART, RLENGTH - 1)
		if (match(d, /[0-9]+s/)) s += substr(d, RSTART, RLENGTH - 1)
		print s }')
	rm -f "$log"
	cp -n "$cache/$module/$pkg/$name"/* "$corpus/" 2>/dev/null
	crashed=0
	if [ "$rc" -ne 0 ]; then
		crashed=1
		failed+=("$pkg $name")
	fi
	record "$pkg" "$name" "${spent:-0}" "$crashed"
done <<<"$order"

if [ ${#failed[@]} -gt 0 ]; then
	echo "crashers (see */testdata/fuzz/; fix, then commit them as regression tests):"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
