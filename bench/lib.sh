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

# Starts sshd processes serving $N loopback addresses 127.0.0.2 onwards (16 per process) on
# $PORT with $TMP/host_key and $TMP/authorized_keys, appends their pids to SSHD_PIDS and waits
# until every address accepts connections. sftp is served (ansible's fetch needs it).
start_loopback_sshds() {
    local g i conf
    for ((g = 0; g * 16 < N; g++)); do
        conf="$TMP/sshd_config.$g"
        printf '%s\n' "Port $PORT" "HostKey $TMP/host_key" "PidFile $TMP/sshd.$g.pid" \
            "AuthorizedKeysFile $TMP/authorized_keys" "StrictModes no" "UsePAM no" \
            "PasswordAuthentication no" "KbdInteractiveAuthentication no" "PubkeyAuthentication yes" \
            "PermitRootLogin yes" "MaxStartups 200:30:400" "MaxSessions 200" "LogLevel ERROR" \
            "Subsystem sftp internal-sftp" >"$conf"
        for ((i = g * 16; i < N && i < (g + 1) * 16; i++)); do echo "ListenAddress 127.0.0.$((i + 2))" >>"$conf"; done
        /usr/sbin/sshd -D -e -f "$conf" </dev/null >/dev/null 2>>"$TMP/sshd.log" &
        SSHD_PIDS+=($!)
    done
    for ((i = 0; i < N; i++)); do
        until "$PY" -c "import socket; socket.create_connection(('127.0.0.$((i + 2))', $PORT), 1)" 2>/dev/null; do sleep 0.02; done
    done
}
