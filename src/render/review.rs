//! The review part of every export: the approval policy, the approvals (who, when, which
//! plan fingerprint, why, and whether each counts) and the facts recorded for the drift gate.

use std::fmt::Write as _;

use serde_json::json;

use crate::store::{format_time, ApprovalPolicy, Operation, Review};

/// The review as JSON, with `counts` on each approval (`operation::approve::counted`).
pub(crate) fn review_json(review: &Review, op: &Operation, counts: &[bool]) -> serde_json::Value {
    let approvals: Vec<serde_json::Value> = review
        .approvals
        .iter()
        .zip(counts)
        .map(|(a, counts)| {
            json!({
                "who": a.who(),
                "at": a.at,
                "time": format_time(a.at),
                "fingerprint": a.fingerprint,
                "reason": a.reason,
                "counts": counts,
            })
        })
        .collect();
    json!({
        "fingerprint": op.fingerprint,
        "policy": review.policy,
        "approvals": approvals,
        "facts": review.facts,
    })
}

/// The approval policy in one sentence (without the full stop), for `plan approvals` and
/// every export: `1 approval(s), not by the operation's creator (procedure p, inventory
/// policy)` or `no approval required`.
pub(crate) fn policy_sentence(policy: &ApprovalPolicy) -> String {
    if !policy.required {
        return "no approval required".into();
    }
    format!(
        "{} approval(s){} ({})",
        policy.count.max(1),
        if policy.distinct_from_creator {
            ", not by the operation's creator"
        } else {
            ""
        },
        policy.from.join(", ")
    )
}

/// Adds `"review"` to an export's JSON text.
pub(crate) fn with_review(export_json: String, review: serde_json::Value) -> String {
    match serde_json::from_str::<serde_json::Value>(&export_json) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("review".into(), review);
            serde_json::to_string_pretty(&map).unwrap_or(export_json)
        }
        _ => export_json,
    }
}

/// The review as a Markdown section, appended to `plan export --format markdown`.
pub(crate) fn review_markdown(review: &Review, counts: &[bool]) -> String {
    let mut out = String::from("\n## Approvals\n\n");
    let _ = writeln!(out, "Policy: {}.\n", policy_sentence(&review.policy));
    if review.approvals.is_empty() {
        out.push_str("No approvals.\n");
    } else {
        out.push_str(
            "| When | Who | Plan fingerprint | Reason | Counts |\n|---|---|---|---|---|\n",
        );
        for (a, counts) in review.approvals.iter().zip(counts) {
            let _ = writeln!(
                out,
                "| {} | {} | `sha256:{}` | {} | {} |",
                format_time(a.at),
                a.who(),
                &a.fingerprint[..a.fingerprint.len().min(16)],
                a.reason.replace('|', "\\|").replace('\n', " "),
                if *counts { "yes" } else { "no" }
            );
        }
    }
    if let Some(facts) = &review.facts {
        let _ = writeln!(
            out,
            "\n### Facts recorded at {} ({})\n",
            facts.at,
            format_time(facts.taken_at)
        );
        for (k, v) in &facts.items {
            let _ = writeln!(out, "- {k}: {}", v.replace('\n', " "));
        }
    }
    out
}

/// The review as sections of the HTML export: the approvals (with the policy) and the facts.
pub(crate) fn review_sections(review: &Review, counts: &[bool]) -> Vec<super::Section> {
    let policy_line = format!("Policy: {}.", policy_sentence(&review.policy));
    let approvals = super::Section {
        title: "Approvals".into(),
        headers: ["When", "Who", "Plan fingerprint", "Reason", "Counts"]
            .map(String::from)
            .to_vec(),
        rows: review
            .approvals
            .iter()
            .zip(counts)
            .map(|(a, counts)| {
                vec![
                    format_time(a.at),
                    a.who(),
                    format!("sha256:{}", &a.fingerprint[..a.fingerprint.len().min(16)]),
                    a.reason.clone(),
                    if *counts { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect(),
        lines: vec![policy_line],
    };
    let mut sections = vec![approvals];
    if let Some(facts) = &review.facts {
        sections.push(super::Section {
            title: format!(
                "Facts recorded at {} ({})",
                facts.at,
                format_time(facts.taken_at)
            ),
            headers: vec!["Fact".into(), "Value".into()],
            rows: facts
                .items
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect(),
            lines: Vec::new(),
        });
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_sentence_names_count_creator_rule_and_sources() {
        assert_eq!(
            policy_sentence(&ApprovalPolicy::default()),
            "no approval required"
        );
        let policy = ApprovalPolicy {
            required: true,
            count: 2,
            distinct_from_creator: true,
            from: vec!["procedure p".into(), "inventory policy".into()],
        };
        assert_eq!(
            policy_sentence(&policy),
            "2 approval(s), not by the operation's creator (procedure p, inventory policy)"
        );
    }
}
