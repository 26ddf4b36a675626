# Shared by the bench scripts (sourced; expects ROOT, and PY/CACHE where ansible is used).

# Builds the release binary and sets MEDIC to it.
build_medic() {
    (cd "$ROOT" && cargo build --release)
    MEDIC="${CARGO_TARGET_DIR:-$ROOT/target}/release/medic"
    [[ -x "$MEDIC" ]] || { echo "no binary at $MEDIC" >&2; exit 1; }
}

# ansible-core from PyPI in a venv cached under $CACHE; sets VENV.
ensure_ansible() {
    VENV="$CACHE/venv"
    if [[ ! -x "$VENV/bin/ansible-playbook" || ! -x "$VENV/bin/ansible" ]]; then
        mkdir -p "$CACHE"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check ansible-core
    fi
}
