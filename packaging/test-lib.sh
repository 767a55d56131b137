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

# install_tools NAME PACKAGE...: installs the Debian packages the test needs on this machine (a
# fresh Debian 12 has none of debootstrap, systemd-container, dpkg-dev), quietly, once.
install_tools() {
    local name=$1 missing=() package
    shift
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    echo "$name: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
            "${missing[@]}" >/dev/null ||
        { echo "$name: could not install ${missing[*]}" >&2; exit 2; }
}
