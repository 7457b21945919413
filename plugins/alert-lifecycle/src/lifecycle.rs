//! The operator alert state machine.

use weir_fleet_events::{ActionType, AlertStatus};

/// The status `action` moves an alert in `from` to, or `None` if the action
/// is not allowed there. `INTERVENE` records an intervention on a live
/// alert and leaves its status as it is.
pub fn next_status(action: ActionType, from: AlertStatus) -> Option<AlertStatus> {
    use ActionType::*;
    use AlertStatus::*;
    match (action, from) {
        (Acknowledge, Open) => Some(Acknowledged),
        (Resolve, Open | Acknowledged) => Some(Resolved),
        (Dismiss, Open | Acknowledged) => Some(Dismissed),
        (Intervene, Open | Acknowledged) => Some(from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionType::*;
    use AlertStatus::*;

    #[test]
    fn follows_the_table() {
        let all = [Open, Acknowledged, Resolved, Dismissed];
        let allowed: Vec<(ActionType, AlertStatus, AlertStatus)> =
            [Acknowledge, Resolve, Dismiss, Intervene]
                .into_iter()
                .flat_map(|a| {
                    all.into_iter()
                        .filter_map(move |s| Some((a, s, next_status(a, s)?)))
                })
                .collect();
        assert_eq!(
            allowed,
            vec![
                (Acknowledge, Open, Acknowledged),
                (Resolve, Open, Resolved),
                (Resolve, Acknowledged, Resolved),
                (Dismiss, Open, Dismissed),
                (Dismiss, Acknowledged, Dismissed),
                (Intervene, Open, Open),
                (Intervene, Acknowledged, Acknowledged),
            ]
        );
    }
}
