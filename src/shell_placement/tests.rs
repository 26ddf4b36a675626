//! Unit tests of the placement classifier: accepted and refused placements.

use super::*;

fn refused(source: &str) -> Option<String> {
    check(source).first().map(|p| p.message.clone())
}

#[test]
fn plain_word_placements_are_accepted() {
    for ok in [
        "echo {{ v }}",
        "echo S:{{ v }}",
        "X={{ v }} cmd",
        "cmd --opt={{ v }}",
        "echo $(printf %s {{ v }})",
        "echo \"$(printf %s {{ v }})\"",
        "echo ${HOME:-{{ v }}}",
        "a && {{ cmd | shell_words }} --token {{ t }}",
        "sh -c 'echo \"$1\"' _ {{ v }}",
        "kubeadm upgrade apply v{{ version }} --yes",
        "{% if a == 'x' %}echo {{ v }}{% else %}true{% endif %}",
        "{% for x in xs %}echo {{ x }}; {% endfor %}",
        "cat <<'EOF'\nliteral\nEOF\necho {{ v }}",
        "echo '# not a comment' {{ v }}",
        "echo a#b {{ v }}",
        "echo {{ v | safe }} '{{ w | safe }}'",
        "awk '{print $1}' {{ file }}",
        "jq -r --arg n {{ name }} '.members[] | select(.name == $n) | .ID'",
        "echo '{' {{ v }} '}'",
        "{% raw %}echo '{{ not a value }}'{% endraw %} {{ v }}",
        "echo \"{% if true %}a{% endif %}\"",
        "echo $(printf %s {{ v }}) more {{ w }}",
        "[ {{ v }} -eq 1 ]",
        "cat <<'EOF'\nx\\\nEOF\necho {{ v }}",
    ] {
        assert_eq!(check(ok), vec![], "{ok}");
    }
}

#[test]
fn placements_that_let_a_value_out_are_refused() {
    for (bad, says) in [
        ("echo 'S:{{ v }}'", "single quotes"),
        ("echo \"S:{{ v }}\"", "double quotes"),
        ("echo \"$(echo \"{{ v }}\")\"", "double quotes"),
        ("echo `echo {{ v }}`", "backticks"),
        ("echo $(( {{ v }} + 1 ))", "arithmetic"),
        ("echo hi # {{ v }}", "comment"),
        ("cat <<EOF\n{{ v }}\nEOF", "here-document"),
        ("cat <<-'EOF'\n\tx {{ v }}\n\tEOF", "here-document"),
        ("echo \\{{ v }}", "backslash"),
        ("echo ${{ v }}", "`$`"),
        ("eval {{ v }}", "eval"),
        ("sudo -u root eval {{ v }}", "eval"),
        ("if eval {{ v }}; then :; fi", "eval"),
        ("if true; then ssh h {{ v }}; fi", "ssh"),
        ("for n in a; do ssh $n {{ v }}; done", "ssh"),
        ("while ! eval {{ v }}; do :; done", "eval"),
        ("{ eval {{ v }}; }", "eval"),
        ("sh -c {{ v }}", "script"),
        ("bash -lc {{ v }}", "script"),
        ("timeout 5 sudo bash -c {{ v }}", "script"),
        ("kubectl exec p -- sh -c {{ v }}", "script"),
        ("su root -c {{ v }}", "script"),
        ("ssh host {{ v }}", "ssh"),
        ("watch {{ v }}", "watch"),
        ("echo '{% if a %}'{{ v }}'{% endif %}'", "tag"),
        ("echo $'x{{ v }}'", "single quotes"),
        ("sh -c -- {{ v }}", "script"),
        ("sh -c -e {{ v }}", "script"),
        ("bash -c -o pipefail {{ v }}", "script"),
        ("{% if d == 'y' %}echo {% endif %}eval {{ v }}", "eval"),
        ("{{ empty }} eval {{ v }}", "eval"),
        ("SUDO=; $SUDO eval {{ v }}", "eval"),
        ("timeout 1h ssh host {{ v }}", "ssh"),
        ("eval $(printf %s {{ v }})", "eval"),
        ("{% if d %}x{% endif %}#{{ v }}", "comment"),
        // An empty list renders as nothing, so `#` may start the word.
        ("echo {{ v }}#x {{ w }}", "comment"),
        ("a{% set x %}#{{ v }}{% endset %}", "comment"),
        ("cat <<EOF\na\\\nEOF\n{{ v }}\nEOF", "here-document"),
        ("cat <<EOF\r\nEOF\necho {{ v }}\nEOF\r\n", "here-document"),
        ("flock /tmp/l -c {{ v }}", "script"),
        ("script -qc {{ v }}", "script"),
        ("env -S {{ v }}", "script"),
        ("trap {{ v }} EXIT", "trap"),
        ("alias x={{ v }}", "alias"),
        ("let {{ v }}", "let"),
        ("[[ {{ v }} -eq 1 ]]", "[[ ]]"),
        ("(( {{ v }} + 1 ))", "arithmetic"),
        ("{# don't #}\necho 'S:{{ v }}'", "single quotes"),
        (
            "{% raw %}printf '{%%s}' x{% endraw %}; echo 'S:{{ v }}'",
            "single quotes",
        ),
    ] {
        let message = refused(bad).unwrap_or_else(|| panic!("accepted: {bad}"));
        assert!(message.contains(says), "{bad}: {message}");
    }
}

#[test]
fn offsets_point_at_the_value() {
    let src = "echo ok\necho '{{ v }}'";
    let p = &check(src)[0];
    assert_eq!(&src[p.offset..p.offset + 2], "{{");
    assert!(p.message.contains("remove the quotes around {{ v }}"));
}

#[test]
fn the_context_closes_where_the_shell_closes_it() {
    // After the quotes close, a value is a plain word again.
    assert_eq!(check("echo 'a' \"b\" `c` $((1+2)) {{ v }}"), vec![]);
    // A comment ends at the newline; a here-document at its delimiter.
    assert_eq!(check("# note\necho {{ v }}"), vec![]);
    assert_eq!(check("cat <<EOF\nx\nEOF\necho {{ v }}"), vec![]);
}
