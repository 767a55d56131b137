# Shared by packaging/test-install.sh and packaging/test-systemd.sh: step/PASS/FAIL accounting
# and the choice of the two package builds under test. Sourced, not run.
passed=0 failed=0
step() { printf '\n== %s\n' "$*"; }
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { # check "what" command...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# pick_debs NAME [OLD NEW]: sets old_deb and new_deb — the two given, or the two newest builds in
# out/deb (scripts/build-deb VERSION, twice).
pick_debs() {
    local name=$1
    shift
    if (($# == 2)); then
        old_deb=$1 new_deb=$2
    else
        mapfile -t debs < <(ls -t out/deb/gatehouse_*_amd64.deb 2>/dev/null)
        ((${#debs[@]} >= 2)) ||
            { echo "$name: need two builds in out/deb (scripts/build-deb VERSION, twice)" >&2; exit 2; }
        new_deb=${debs[0]} old_deb=${debs[1]}
    fi
}
