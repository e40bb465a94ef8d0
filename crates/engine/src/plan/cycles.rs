//! The `needs` graph: cycles (each reported once, naming its steps in execution order)
//! and reachability, which decides whether a template may read another step's output.
//!
//! Graphs are `needs` lists by step index; [`depends_on`] is only called on graphs that
//! [`check_cycles`] found acyclic.

use std::collections::HashSet;

use super::report::Ctx;
use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::workflow::Step;

/// Finds cycles with a depth-first search and reports each once, naming its steps.
pub(super) fn check_cycles(cx: &mut Ctx<'_>, list: &[Step], needs: &[Vec<usize>]) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = needs.len();
    let mut mark = vec![Mark::New; n];
    let mut found = false;
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: stack of (node, next child index); `path` mirrors the stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (node, ref mut child)) = stack.last_mut() {
            if let Some(&next) = needs[node].get(*child) {
                *child += 1;
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::Active;
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        found = true;
                        let pos = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                        // The stack goes from dependant to dependency; a cycle reads best
                        // in execution order, so reverse it.
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(s, _)| *s).collect();
                        cycle.reverse();
                        // Start the cycle at the step written first in the file.
                        if let Some(min_pos) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, s)| **s)
                            .map(|(i, _)| i)
                        {
                            cycle.rotate_left(min_pos);
                        }
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if reported.insert(key) {
                            let names: Vec<&str> =
                                cycle.iter().map(|&s| list[s].id.as_str()).collect();
                            let first = cycle[0];
                            let text = format!("{} → {}", names.join(" → "), names[0]);
                            let locs = cx.step_locs(first);
                            cx.push(
                                Diagnostic::new(
                                    DiagnosticCode::Cycle,
                                    format!("the steps form a cycle: {text}"),
                                )
                                .step(&list[first].id)
                                .field("needs")
                                .at(locs.of("needs"))
                                .hint(
                                    "remove one of these `needs` entries so the steps form a DAG",
                                ),
                            );
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    found
}

/// Whether step `from` depends on step `to`, directly or through other steps. Direct
/// needs are checked first (the common case); otherwise a depth-first search over `needs`,
/// O(steps + edges) at worst. Only called on acyclic graphs.
pub(super) fn depends_on(needs: &[Vec<usize>], from: usize, to: usize) -> bool {
    if needs[from].contains(&to) {
        return true;
    }
    let mut seen = vec![false; needs.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        for &d in &needs[i] {
            if d == to {
                return true;
            }
            if !seen[d] {
                seen[d] = true;
                stack.push(d);
            }
        }
    }
    false
}
