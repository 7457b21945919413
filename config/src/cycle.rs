//! Elementary cycles of the stage graph.
//!
//! A cycle makes every message loop through the stages forever, so it is a configuration error.
//! Each cycle is reported once, as a list of node indices starting from its lowest index (the
//! stage declared first).

/// At most this many cycles are listed; a graph with more needs restructuring, not a longer
/// list, and the cap also bounds the work done on adversarial input.
pub(super) const MAX_CYCLES: usize = 20;

/// Returns up to `limit` elementary cycles of the graph `edges` (adjacency lists, any order,
/// duplicates allowed), and whether more exist.
///
/// This is Johnson's algorithm, written with explicit stacks so that a long chain of stages
/// cannot overflow the thread's stack.
pub(super) fn find_cycles(edges: &[Vec<usize>], limit: usize) -> (Vec<Vec<usize>>, bool) {
    let n = edges.len();
    let edges: Vec<Vec<usize>> = edges
        .iter()
        .map(|targets| {
            let mut targets: Vec<usize> = targets.iter().copied().filter(|&t| t < n).collect();
            targets.sort_unstable();
            targets.dedup();
            targets
        })
        .collect();

    let mut cycles = Vec::new();
    let mut start = 0;
    // Johnson's outer loop: find the lowest node that lies on a cycle among nodes >= start,
    // list the cycles through it within its strongly connected component, then drop it. Every
    // round lists at least one cycle, so the cap also bounds the number of rounds.
    while let Some((lowest, component)) = lowest_cyclic_component(&edges, start) {
        let mut search = Search::new(n);
        if search.run(&edges, &component, lowest, &mut cycles, limit) {
            return (cycles, true);
        }
        start = lowest + 1;
    }
    (cycles, false)
}

/// Among nodes >= `start`, the lowest node that lies on a cycle, and the membership of its
/// strongly connected component.
fn lowest_cyclic_component(edges: &[Vec<usize>], start: usize) -> Option<(usize, Vec<bool>)> {
    let component = components(edges, start);
    let mut sizes = vec![0usize; edges.len()];
    for id in component.iter().flatten() {
        sizes[*id] += 1;
    }
    let lowest = (start..edges.len())
        .find(|&v| component[v].is_some_and(|id| sizes[id] > 1) || edges[v].contains(&v))?;
    let id = component[lowest];
    Some((lowest, component.iter().map(|&c| c == id).collect()))
}

/// Strongly connected components of the subgraph of nodes >= `start` (Kosaraju, iterative).
fn components(edges: &[Vec<usize>], start: usize) -> Vec<Option<usize>> {
    let n = edges.len();
    let mut visited = vec![false; n];
    let mut finished = Vec::with_capacity(n.saturating_sub(start));
    for root in start..n {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next_edge)) = stack.last_mut() {
            if let Some(&next) = edges[*node].get(*next_edge) {
                *next_edge += 1;
                if next >= start && !visited[next] {
                    visited[next] = true;
                    stack.push((next, 0));
                }
            } else {
                finished.push(*node);
                stack.pop();
            }
        }
    }

    let mut reverse = vec![Vec::new(); n];
    for (from, targets) in edges.iter().enumerate().skip(start) {
        for &to in targets.iter().filter(|&&to| to >= start) {
            reverse[to].push(from);
        }
    }
    let mut component = vec![None; n];
    let mut next_id = 0;
    for &root in finished.iter().rev() {
        if component[root].is_some() {
            continue;
        }
        component[root] = Some(next_id);
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &from in &reverse[node] {
                if component[from].is_none() {
                    component[from] = Some(next_id);
                    stack.push(from);
                }
            }
        }
        next_id += 1;
    }
    component
}

struct Frame {
    node: usize,
    next_edge: usize,
    found_cycle: bool,
}

struct Search {
    blocked: Vec<bool>,
    /// Johnson's B sets: nodes to unblock when the key node is unblocked.
    blocked_by: Vec<Vec<usize>>,
}

impl Search {
    fn new(n: usize) -> Self {
        Self {
            blocked: vec![false; n],
            blocked_by: vec![Vec::new(); n],
        }
    }

    /// Appends the cycles through `start` to `cycles`; returns true when `limit` was exceeded.
    fn run(
        &mut self,
        edges: &[Vec<usize>],
        component: &[bool],
        start: usize,
        cycles: &mut Vec<Vec<usize>>,
        limit: usize,
    ) -> bool {
        let mut path = vec![start];
        let mut frames = vec![Frame {
            node: start,
            next_edge: 0,
            found_cycle: false,
        }];
        self.blocked[start] = true;

        while let Some(frame) = frames.last_mut() {
            let node = frame.node;
            if let Some(&next) = edges[node].get(frame.next_edge) {
                frame.next_edge += 1;
                if !component[next] {
                    continue;
                }
                if next == start {
                    frame.found_cycle = true;
                    if cycles.len() == limit {
                        return true;
                    }
                    cycles.push(path.clone());
                } else if !self.blocked[next] {
                    self.blocked[next] = true;
                    path.push(next);
                    frames.push(Frame {
                        node: next,
                        next_edge: 0,
                        found_cycle: false,
                    });
                }
                continue;
            }

            let found_cycle = frame.found_cycle;
            if found_cycle {
                self.unblock(node);
            } else {
                for &next in edges[node].iter().filter(|&&next| component[next]) {
                    if !self.blocked_by[next].contains(&node) {
                        self.blocked_by[next].push(node);
                    }
                }
            }
            frames.pop();
            path.pop();
            if let Some(parent) = frames.last_mut() {
                parent.found_cycle |= found_cycle;
            }
        }
        false
    }

    fn unblock(&mut self, node: usize) {
        let mut pending = vec![node];
        while let Some(node) = pending.pop() {
            self.blocked[node] = false;
            for waiting in std::mem::take(&mut self.blocked_by[node]) {
                if self.blocked[waiting] {
                    pending.push(waiting);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
        find_cycles(edges, MAX_CYCLES).0
    }

    #[test]
    fn acyclic_graph_has_no_cycles() {
        assert!(cycles(&[vec![1, 2], vec![2], vec![]]).is_empty());
    }

    #[test]
    fn self_loop_and_two_cycle() {
        assert_eq!(cycles(&[vec![0]]), vec![vec![0]]);
        assert_eq!(cycles(&[vec![1], vec![0]]), vec![vec![0, 1]]);
    }

    #[test]
    fn each_cycle_once() {
        // 0 -> 1 -> 0, 1 -> 2 -> 1, 0 -> 2 -> 1 -> 0, plus duplicate edges.
        let found = cycles(&[vec![1, 2, 1], vec![0, 2], vec![1]]);
        assert_eq!(found, vec![vec![0, 1], vec![0, 2, 1], vec![1, 2]]);
    }

    #[test]
    fn complete_graph_is_capped() {
        let n = 12;
        let edges: Vec<Vec<usize>> = (0..n)
            .map(|v| (0..n).filter(|&w| w != v).collect())
            .collect();
        let (found, more) = find_cycles(&edges, 5);
        assert_eq!(found.len(), 5);
        assert!(more);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 200_000;
        let edges: Vec<Vec<usize>> = (0..n).map(|v| vec![(v + 1) % n]).collect();
        let (found, more) = find_cycles(&edges, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n);
        assert!(!more);
    }
}
