# Shared by the .ci scripts: install what medic and its tests need on a fresh Debian machine.
set -euo pipefail

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
}

# The Rust toolchain comes with the machine (rustup); everything else is a Debian package.
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
