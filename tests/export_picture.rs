//! A picture of the plan: the Mermaid flowchart in the Markdown export, `--format svg` and
//! `--format html` (opened in headless Chromium), with a hostile phase description and a secret.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::Env;

const SECRET: &str = "pict-s3cr3t-0123456789";
/// A description that tries to end a Mermaid label, a Markdown fence, an SVG text and an HTML
/// element.
const HOSTILE: &str = r#"x"] --> evil["<script>alert('pwned')</script> ``` &amp; end"#;

/// An operation with groups, explicit and implicit requirements, completed, failed and
/// unstarted phases, and a secret parameter. Returns the phases (ID → requires) from
/// `medic plan -o json`.
fn operation(env: &Env) -> BTreeMap<String, Vec<String>> {
    env.procedure(
        "pic",
        &format!(
            r#"
name: pic
params:
  token: {{secret: true, required: true, description: a token}}
phases:
  - id: a
    description: '{}'
    run: echo a {{{{ token }}}}
  - id: g
    parallel: true
    phases:
      - id: x
        run: echo x
        rollback:
          run: echo undo x
      - id: y
        run: echo y
  - id: z
    requires: [/a]
    run: echo z
  - id: bad
    run: exit 4
  - id: after
    run: echo never
"#,
            HOSTILE.replace('\'', "''")
        ),
    );
    env.medic(&["start", "pic", "--set", &format!("token={SECRET}")])
        .run()
        .code(1);
    let plan = env.medic(&["plan", "-o", "json"]).run().code(0).json();
    plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let requires = p["requires"].as_array().unwrap();
            (
                p["id"].as_str().unwrap().to_string(),
                requires
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn mermaid_block(markdown: &str) -> &str {
    let start = markdown.find("```mermaid\n").expect("a mermaid block") + "```mermaid\n".len();
    let len = markdown[start..].find("```").expect("the block ends");
    &markdown[start..start + len]
}

#[test]
fn markdown_has_a_mermaid_node_per_phase_and_an_edge_per_requirement() {
    let env = Env::new();
    let phases = operation(&env);
    let markdown = env.medic(&["plan", "export"]).run().code(0).stdout;
    let block = mermaid_block(&markdown);
    // The fence found above is the real end: the hostile backticks were escaped.
    assert!(block.trim_end().ends_with("class p7 unstarted"), "{block}");
    // Node declarations: `pN["label"]` or `subgraph pN["label"]`; the label's text starts with
    // the phase ID and holds no quote of its own.
    let mut nodes: BTreeMap<String, String> = BTreeMap::new();
    for line in block.lines().map(str::trim) {
        let decl = line.strip_prefix("subgraph ").unwrap_or(line);
        if let Some((node, rest)) = decl.split_once("[\"") {
            let label = rest.strip_suffix("\"]").expect("label closes at line end");
            let text = label.replace("<br/>", " ");
            assert!(!text.contains('"') && !text.contains('<'), "{line}");
            let id = label.split("<br/>").next().unwrap().to_string();
            assert!(nodes.insert(id, node.to_string()).is_none(), "{line}");
        }
    }
    let ids: BTreeSet<&String> = phases.keys().collect();
    assert_eq!(nodes.keys().collect::<BTreeSet<_>>(), ids, "{block}");
    let edges: BTreeSet<&str> = block.lines().filter(|l| l.contains(" --> ")).collect();
    let expected: BTreeSet<String> = phases
        .iter()
        .flat_map(|(id, requires)| {
            let nodes = &nodes;
            requires
                .iter()
                .map(move |r| format!("  {} --> {}", nodes[r], nodes[id]))
        })
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(
        edges,
        expected.iter().map(String::as_str).collect(),
        "{block}"
    );
    assert!(block.contains("class p1 completed") && block.contains("class p6 failed"));
    assert!(!block.contains("<script") && !markdown.contains(SECRET));
}

#[test]
fn svg_is_xml_with_one_element_per_phase() {
    let env = Env::new();
    let phases = operation(&env);
    let svg = env
        .medic(&["plan", "export", "--format", "svg"])
        .run()
        .code(0)
        .stdout;
    assert!(!svg.contains(SECRET));
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let drawn: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("g")
                && n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|c| c == "phase"))
        })
        .map(|n| {
            (
                n.attribute("data-phase").unwrap().to_string(),
                n.attribute("data-state").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(drawn.len(), phases.len(), "{svg}");
    assert_eq!(
        drawn.iter().map(|(id, _)| id).collect::<BTreeSet<_>>(),
        phases.keys().collect::<BTreeSet<_>>()
    );
    let state = |id: &str| drawn.iter().find(|(p, _)| p == id).unwrap().1.clone();
    assert_eq!(state("/a"), "completed");
    assert_eq!(state("/bad"), "failed");
    assert_eq!(state("/after"), "unstarted");
    // The hostile description is text, not elements.
    assert!(doc.descendants().all(|n| !n.has_tag_name("script")));
    assert!(doc
        .descendants()
        .any(|n| n.text().is_some_and(|t| t.contains("<script>alert"))));
    let arcs = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("requires"))
        .count();
    assert_eq!(arcs, phases.values().map(Vec::len).sum::<usize>());
}

fn chromium(args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(args)
        .output()
        .expect("chromium is installed (.ci/test installs the Debian package)")
}

#[test]
fn html_is_one_safe_page_that_a_browser_renders() {
    let env = Env::new();
    let phases = operation(&env);
    let html = env
        .medic(&["plan", "export", "--format", "html"])
        .run()
        .code(0)
        .stdout;
    assert!(!html.contains(SECRET));
    // Self-contained: nothing to fetch, nothing to run.
    for external in ["<script", "<link", "src=", "@import", "url(http"] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(html.contains("Content-Security-Policy"));
    let page = env.file("plan.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let dom = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("</html>"), "chromium rendered nothing: {dom}");
    assert!(
        !dom.contains("<script"),
        "the description became markup: {dom}"
    );
    assert!(!dom.contains(SECRET));
    for id in phases.keys() {
        assert!(
            dom.contains(&format!("data-phase=\"{id}\"")),
            "{id} not drawn"
        );
        // Every leaf's action is listed (groups have none).
        if id != "/g" {
            assert!(
                dom.contains(&format!("<code>{id}</code>")),
                "{id} not listed"
            );
        }
    }
    for text in [
        "Parameters",
        "(secret, not shown)",
        "run locally: echo undo x",
        "History",
        "in_progress → failed",
    ] {
        assert!(dom.contains(text), "{text} missing");
    }
    let shot = env.file("plan.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1600",
        &url,
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
}
