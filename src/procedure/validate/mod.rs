//! Whole-procedure validation of `requires`: unknown phases (with the closest ID), requiring
//! oneself, cycles (named), and captured values used before the phase that captures them.
//! What a `requires` entry means comes from [`crate::plan::requires`], the rule the plan
//! itself runs by.

pub(super) mod templates;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};

use super::{PhaseSpec, Procedure};
use crate::plan::{requires, PhaseId};
use crate::source::{closest, Diagnostic, Reader, TemplateKind};
use crate::template::Templates;

/// Static phase paths: path → (spec, whether it sits inside a foreach body).
fn static_paths(procedure: &Procedure) -> Vec<StaticPath<'_>> {
    fn visit<'a>(
        phases: &'a [PhaseSpec],
        prefix: &str,
        inside_foreach: bool,
        parent: Option<usize>,
        out: &mut Vec<StaticPath<'a>>,
    ) {
        for p in phases {
            let path = format!("{prefix}/{}", p.id);
            let me = out.len();
            out.push((path.clone(), p, inside_foreach, parent));
            visit(
                &p.children,
                &path,
                inside_foreach || p.foreach.is_some(),
                Some(me),
                out,
            );
        }
    }
    let mut out = Vec::new();
    visit(&procedure.phases, "", false, None, &mut out);
    out
}

/// A phase as validation sees it: its static path, its spec, whether it sits inside a
/// foreach body, and its parent's index.
type StaticPath<'a> = (String, &'a PhaseSpec, bool, Option<usize>);

/// The static requires graph: two vertices per phase path, `start` (may begin) and `done`
/// (all of it completed); an edge means "must happen before".
pub(super) struct RequiresGraph {
    paths: Vec<String>,
    graph: DiGraph<(usize, bool), ()>,
    start: Vec<NodeIndex>,
    done: Vec<NodeIndex>,
}

/// Unknown requires, requiring oneself or one's own ancestors/descendants, and cycles. Gives
/// the graph back when it has no cycle. What each phase requires is [`requires::direct`], the
/// rule the plan runs by.
pub(super) fn validate_graph(procedure: &Procedure, r: &mut Reader) -> Option<RequiresGraph> {
    let paths = static_paths(procedure);
    let index: HashMap<&str, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.0.as_str(), i))
        .collect();
    // Two vertices per phase: start (may begin) and done (all of it completed).
    let mut graph: DiGraph<(usize, bool), ()> = DiGraph::new();
    let start: Vec<NodeIndex> = (0..paths.len())
        .map(|i| graph.add_node((i, false)))
        .collect();
    let done: Vec<NodeIndex> = (0..paths.len())
        .map(|i| graph.add_node((i, true)))
        .collect();
    // Each phase's sibling just before it (paths are in depth-first order), found in one pass.
    let mut previous_sibling: Vec<Option<usize>> = vec![None; paths.len()];
    let mut last_child: HashMap<Option<usize>, usize> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        previous_sibling[i] = last_child.insert(p.3, i);
    }
    for (i, (_, spec, _, parent)) in paths.iter().enumerate() {
        if let Some(p) = parent {
            graph.add_edge(start[*p], start[i], ());
            graph.add_edge(done[i], done[*p], ());
        }
        if spec.children.is_empty() {
            graph.add_edge(start[i], done[i], ());
        }
        let explicit = explicit_requirements(i, &paths, &index, r);
        let parallel = parent.is_some_and(|p| paths[p].1.parallel);
        for t in requires::direct(explicit, parallel, previous_sibling[i]) {
            graph.add_edge(done[t], start[i], ());
        }
    }
    let acyclic = report_cycles(&graph, &paths, r);
    acyclic.then(|| RequiresGraph {
        paths: paths.into_iter().map(|p| p.0).collect(),
        graph,
        start,
        done,
    })
}

/// The phases that phase `i`'s `requires:` entries name, reporting each entry that names no
/// phase, the phase itself, or a phase inside a foreach body from outside it.
fn explicit_requirements(
    i: usize,
    paths: &[StaticPath<'_>],
    index: &HashMap<&str, usize>,
    r: &mut Reader,
) -> Vec<usize> {
    let (path, spec, _, _) = &paths[i];
    let group = PhaseId::parse(&path[..path.rfind('/').unwrap_or(0)]);
    let mut out = Vec::new();
    for (req, loc) in &spec.requires {
        let target = requires::resolve(&group, req).to_string();
        let Some(&t) = index.get(target.as_str()) else {
            let hint = closest(&target, paths.iter().map(|p| p.0.as_str()))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_else(|| {
                    "; requires takes a phase path such as /etcd/remove, or a sibling's id"
                        .to_string()
                });
            r.diagnostics.push(Diagnostic {
                location: Some(loc.clone()),
                message: format!("phase {path} requires unknown phase `{req}`{hint}"),
            });
            continue;
        };
        if t == i {
            r.diagnostics.push(Diagnostic {
                location: Some(loc.clone()),
                message: format!("phase {path} requires itself"),
            });
            continue;
        }
        if paths[t].2
            && req.starts_with('/')
            && !path.starts_with(&format!("{}/", &target[..target.rfind('/').unwrap_or(0)]))
        {
            r.diagnostics.push(Diagnostic {
                location: Some(loc.clone()),
                message: format!(
                    "phase {path} requires {target}, which is inside a foreach; require the foreach phase itself"
                ),
            });
            continue;
        }
        out.push(t);
    }
    out
}

/// Names one cycle per strongly connected component of the graph; whether there was none.
fn report_cycles(
    graph: &DiGraph<(usize, bool), ()>,
    paths: &[StaticPath<'_>],
    r: &mut Reader,
) -> bool {
    let mut acyclic = true;
    for scc in petgraph::algo::kosaraju_scc(graph) {
        if scc.len() < 2 {
            continue;
        }
        acyclic = false;
        let mut cycle: Vec<String> = Vec::new();
        for v in find_cycle(graph, &scc) {
            let path = paths[graph[v].0].0.clone();
            if cycle.last() != Some(&path) {
                cycle.push(path);
            }
        }
        if cycle.len() > 1 && cycle.first() == cycle.last() {
            cycle.pop();
        }
        let first = paths
            .iter()
            .find(|p| p.0 == cycle[0])
            .map(|p| p.1.location.clone());
        let mut shown = cycle.clone();
        shown.push(cycle[0].clone());
        r.diagnostics.push(Diagnostic {
            location: first,
            message: format!(
                "requires cycle: {} (a phase cannot wait for itself, its own group, or anything waiting for it)",
                shown.join(" → ")
            ),
        });
    }
    acyclic
}

/// A phase may only use a captured value that some phase captures before it starts: one whose
/// completion the requires graph (ordered siblings included) puts before it. A capture made
/// by a later phase, or by a sibling in a parallel group, may not exist yet when it runs. A
/// rollback runs after its phase, so it may also use what its own phase captures.
pub(super) fn validate_capture_order(procedure: &Procedure, graph: &RequiresGraph, r: &mut Reader) {
    let mut capturers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let index: HashMap<&str, usize> = graph
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let specs = static_paths(procedure);
    for (i, (_, spec, _, _)) in specs.iter().enumerate() {
        for name in spec.capture.keys() {
            capturers.entry(name.as_str()).or_default().push(i);
        }
    }
    let templates = Templates::new();
    // Per captured name, every vertex reached once one of its capturers is done.
    let mut reached: HashMap<&str, Vec<bool>> = HashMap::new();
    for use_ in &r.templates {
        let Some(&phase) = index.get(use_.phase.as_str()) else {
            continue;
        };
        let names = match use_.kind {
            TemplateKind::Expression => templates.expression_names(&use_.source),
            TemplateKind::Text => templates.template_names(&use_.source, false),
            TemplateKind::Shell => templates.template_names(&use_.source, true),
        };
        for name in names.unwrap_or_default() {
            let Some((&name, by)) = capturers.get_key_value(name.as_str()) else {
                continue;
            };
            if use_.locals.iter().any(|l| l == name) {
                continue;
            }
            if use_.rollback && by.contains(&phase) {
                continue;
            }
            let seen = reached.entry(name).or_insert_with(|| {
                let mut seen = vec![false; graph.graph.node_count()];
                let mut stack: Vec<NodeIndex> = by.iter().map(|&q| graph.done[q]).collect();
                while let Some(v) = stack.pop() {
                    if !std::mem::replace(&mut seen[v.index()], true) {
                        stack.extend(graph.graph.neighbors(v));
                    }
                }
                seen
            });
            if seen[graph.start[phase].index()] {
                continue;
            }
            let by: Vec<&str> = by.iter().map(|&q| graph.paths[q].as_str()).collect();
            let fix = if by.len() == 1 {
                format!(
                    "make sure {} completes first: move {} after it, or add `requires: [{}]`",
                    by[0], use_.phase, by[0]
                )
            } else {
                format!("make {} require one of {}", use_.phase, by.join(", "))
            };
            r.diagnostics.push(Diagnostic {
                location: Some(use_.location.clone()),
                message: format!(
                    "phase {} uses `{name}`, which {} captures, but not before {} runs (it comes later, or runs in parallel); {fix}",
                    use_.phase,
                    by.join(" and "),
                    use_.phase
                ),
            });
        }
    }
}

/// One cycle inside a strongly connected component, as a vertex path.
fn find_cycle(graph: &DiGraph<(usize, bool), ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let begin = *scc.iter().min().expect("non-empty");
    // Breadth-first from `begin` back to itself within the component.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([begin]);
    while let Some(v) = queue.pop_front() {
        for w in graph.neighbors(v) {
            if !members.contains(&w) {
                continue;
            }
            if w == begin {
                let mut path = vec![v];
                let mut cur = v;
                while cur != begin {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    scc.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedure::DEFAULT_MAX_PHASES;
    use crate::source::Reader;

    /// Validation's requires graph and the plan the engine runs give every phase the same
    /// requirements: both take them from `plan::requires`.
    #[test]
    fn validation_and_the_plan_agree_on_what_each_phase_requires() {
        let text = "name: t\nphases:\n  - id: a\n    run: x\n  - id: g\n    parallel: true\n    phases:\n      - id: one\n        run: x\n      - id: two\n        requires: [one, /a]\n        run: x\n  - id: o\n    phases:\n      - id: one\n        run: x\n      - id: two\n        requires: [one]\n        run: x\n      - id: three\n        requires: [/g/two]\n        run: x\n  - id: last\n    requires: [/g]\n    run: x\n";
        let procedure = Procedure::parse("t.yaml", text, None).unwrap();
        let mut reader = Reader::new("t.yaml");
        let graph = validate_graph(&procedure, &mut reader).expect("acyclic");
        assert!(reader.diagnostics.is_empty());
        let params = procedure.resolve_params(&[]).unwrap();
        let plan = procedure
            .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
            .unwrap();
        for (i, path) in graph.paths.iter().enumerate() {
            let mut validated: Vec<&str> = graph
                .graph
                .neighbors_directed(graph.start[i], petgraph::Direction::Incoming)
                .filter(|v| graph.graph[*v].1)
                .map(|v| graph.paths[graph.graph[v].0].as_str())
                .collect();
            validated.sort_unstable();
            let node = plan.find(&PhaseId::parse(path)).expect("in the plan");
            let mut planned: Vec<&str> = plan
                .direct_requirements(node)
                .into_iter()
                .map(|r| plan.node(r).id.as_str())
                .collect();
            planned.sort_unstable();
            assert_eq!(validated, planned, "{path}");
        }
        let two = plan.find(&PhaseId::parse("/o/two")).unwrap();
        let ids: Vec<&str> = plan
            .direct_requirements(two)
            .into_iter()
            .map(|r| plan.node(r).id.as_str())
            .collect();
        assert_eq!(ids, ["/o/one"]);
    }
}
