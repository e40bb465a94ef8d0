//! The executor of `vote` steps: each voter's ballot is one model call up the `llm`
//! ladder (selector, breakers, budgets, guardrails, retries; no output cache, so voters
//! stay independent), constrained to `{"choice", "reason"}`; then [`tally`] applies the
//! rule, the quorum, the tie rule and the vetoes (see [`crate::workflow::VoteStep`]).
//!
//! Voters are asked one after another, in the order the step lists them (a model that
//! serves several voters runs one request at a time anyway). Invariant: the ballots and
//! the tally are the step's JSON output whatever the outcome, so a failed vote still
//! shows who voted what.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use super::ladder::{LlmContext, StepEnd};
use super::records::record_for;
use super::{Engine, StepOutput, ms};
use crate::events::StepStatus;
use crate::plan::{VoteAction, VoterAction};
use crate::provider::Usage;
use crate::workflow::{OnTie, VoteRule};

/// Weights closer than this are equal (ties of fractional weights).
const EPSILON: f64 = 1e-9;

/// One voter's ballot, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Ballot {
    /// The voter's name.
    pub(super) voter: String,
    /// Its choice; `None` when its call failed.
    pub(super) choice: Option<String>,
    /// Why, in its words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    /// The model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<String>,
    /// Its weight.
    pub(super) weight: f64,
    /// Whether it holds a veto.
    pub(super) veto: bool,
    /// Why it cast no ballot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// How the ballots are counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counting<'a> {
    pub(super) choices: &'a [String],
    pub(super) rule: VoteRule,
    pub(super) threshold: f64,
    pub(super) quorum: u32,
    pub(super) on_tie: OnTie,
}

/// The weight each choice received (in the order of `choices`), and the winner or why
/// there is none.
pub(super) fn tally(
    c: Counting<'_>,
    ballots: &[Ballot],
) -> (Vec<(String, f64)>, Result<String, String>) {
    let mut totals: Vec<(String, f64)> = c.choices.iter().map(|x| (x.clone(), 0.0)).collect();
    let cast: Vec<&Ballot> = ballots.iter().filter(|b| b.choice.is_some()).collect();
    for b in &cast {
        if let Some(t) = totals.iter_mut().find(|t| Some(&t.0) == b.choice.as_ref()) {
            t.1 += b.weight;
        }
    }
    let counted = u32::try_from(cast.len()).unwrap_or(u32::MAX);
    if counted < c.quorum {
        let why = format!(
            "no quorum: {counted} of {} voters cast a ballot, the quorum is {}",
            ballots.len(),
            c.quorum
        );
        return (totals, Err(why));
    }
    let all: f64 = totals.iter().map(|t| t.1).sum();
    let top = totals.iter().map(|t| t.1).fold(0.0_f64, f64::max);
    let leaders: Vec<&String> = totals
        .iter()
        .filter(|t| (t.1 - top).abs() < EPSILON)
        .map(|t| &t.0)
        .collect();
    let described = describe(&totals);
    let winner = match (c.rule, leaders.as_slice()) {
        (_, []) => Err("no ballot was cast".to_string()),
        (VoteRule::Unanimous, [one]) if (top - all).abs() < EPSILON => Ok((*one).clone()),
        (VoteRule::Unanimous, _) => Err(format!("not unanimous: {described}")),
        (VoteRule::Majority, [one]) if top > all / 2.0 + EPSILON => Ok((*one).clone()),
        (VoteRule::Supermajority, [one]) if top + EPSILON >= c.threshold * all => {
            Ok((*one).clone())
        }
        (VoteRule::Weighted, [one]) => Ok((*one).clone()),
        (_, [_, _, ..]) => match c.on_tie {
            OnTie::FirstChoice => Ok(leaders[0].clone()),
            OnTie::Fail => Err(format!(
                "tie between {} ({top} each)",
                leaders
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        },
        (VoteRule::Majority, _) => Err(format!(
            "no majority: the most weight is {top} of {all} ({described})"
        )),
        (VoteRule::Supermajority, _) => Err(format!(
            "no supermajority: the most weight is {top} of {all}, {:.0}% needed ({described})",
            c.threshold * 100.0
        )),
    };
    let winner = winner.and_then(|w| {
        match cast
            .iter()
            .find(|b| b.veto && b.choice.as_ref() != Some(&w))
        {
            Some(b) => Err(format!(
                "`{w}` is vetoed by {}, who chose `{}`{}",
                b.voter,
                b.choice.as_deref().unwrap_or_default(),
                b.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            None => Ok(w),
        }
    });
    (totals, winner)
}

/// `yes 2, no 1`.
fn describe(totals: &[(String, f64)]) -> String {
    totals
        .iter()
        .map(|(c, w)| format!("{c} {w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a vote step runs with: its planned action, the context of a ballot's call (the
/// rendered question as the prompt), and each voter's rendered system prompt.
pub(super) struct VoteContext {
    pub(super) base: LlmContext,
    pub(super) vote: Arc<VoteAction>,
    pub(super) systems: Vec<Option<String>>,
}

impl Engine {
    /// Runs one `vote` step: every ballot, then the tally.
    pub(super) async fn run_vote_step(self: Arc<Self>, vx: VoteContext) -> StepEnd {
        let t0 = Instant::now();
        let mut rec = record_for(&vx.base.step, StepStatus::Failed, None, Utc::now());
        rec.input = Some(vx.base.prompt.clone());
        let mut ballots = Vec::with_capacity(vx.vote.voters.len());
        let mut usage = Usage::default();
        let mut cost = 0.0;
        for (voter, system) in vx.vote.voters.iter().zip(&vx.systems) {
            let (vrec, out) = self.ballot(&vx, voter, system.clone()).await;
            for mut a in vrec.attempts {
                a.attempt = u32::try_from(rec.attempts.len() + 1).unwrap_or(u32::MAX);
                rec.attempts.push(a);
            }
            rec.fallbacks.extend(vrec.fallbacks);
            rec.guardrails.extend(vrec.guardrails);
            if let Some(u) = vrec.usage {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
            }
            cost += vrec.cost_usd.unwrap_or(0.0);
            if vrec.status == StepStatus::Cancelled {
                rec.status = StepStatus::Cancelled;
                rec.error = Some(format!("cancelled while {} voted", voter.name));
                rec.duration_ms = ms(t0.elapsed());
                return (rec, None);
            }
            let json = out.and_then(|o| o.json);
            let field = |k: &str| {
                json.as_ref()
                    .and_then(|j| j.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            ballots.push(Ballot {
                voter: voter.name.clone(),
                choice: field("choice"),
                reason: field("reason"),
                model: vrec.model,
                weight: voter.weight,
                veto: voter.veto,
                error: vrec.error,
            });
        }
        let v = &vx.vote;
        let counting = Counting {
            choices: &v.choices,
            rule: v.rule,
            threshold: v.threshold,
            quorum: v.quorum,
            on_tie: v.on_tie,
        };
        let (totals, outcome) = tally(counting, &ballots);
        let tally_json: BTreeMap<&str, f64> =
            totals.iter().map(|(c, w)| (c.as_str(), *w)).collect();
        let json = serde_json::json!({
            "choice": outcome.as_ref().ok(),
            "tally": tally_json,
            "ballots": ballots,
        });
        rec.usage = Some(usage);
        if cost > 0.0 {
            rec.cost_usd = Some(cost);
        }
        rec.output_json = Some(json.clone());
        rec.duration_ms = ms(t0.elapsed());
        match outcome {
            Ok(choice) => {
                rec.status = StepStatus::Succeeded;
                rec.output = Some(choice.clone());
                (
                    rec,
                    Some(StepOutput {
                        text: choice,
                        json: Some(json),
                    }),
                )
            }
            Err(why) => {
                rec.error = Some(why);
                (rec, None)
            }
        }
    }

    /// One voter's ballot: an `llm` step's ladder over the voter's models, with the
    /// ballot's schema as the output schema and no output cache.
    async fn ballot(
        &self,
        vx: &VoteContext,
        voter: &VoterAction,
        system: Option<String>,
    ) -> StepEnd {
        let mut llm = vx.base.llm.clone();
        llm.model = voter.model.clone();
        llm.fallback.ask_human = false;
        let mut step = vx.base.step.clone();
        step.cache = false;
        let cx = LlmContext {
            sh: Arc::clone(&vx.base.sh),
            step,
            llm,
            prompt: format!(
                "{}\n\nAnswer with one of: {}. Reply with JSON: {{\"choice\": <your choice>, \"reason\": <one sentence>}}.",
                vx.base.prompt,
                vx.vote.choices.join(", ")
            ),
            system,
            substitute_system: None,
            cancel: vx.base.cancel.clone(),
        };
        self.run_llm_step(cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(voter: &str, choice: Option<&str>, weight: f64, veto: bool) -> Ballot {
        Ballot {
            voter: voter.into(),
            choice: choice.map(str::to_owned),
            reason: Some(format!("{voter}'s reason")),
            model: None,
            weight,
            veto,
            error: choice.is_none().then(|| "the model failed".to_string()),
        }
    }

    fn count(
        rule: VoteRule,
        quorum: u32,
        on_tie: OnTie,
        ballots: &[Ballot],
    ) -> Result<String, String> {
        let choices = ["yes".to_string(), "no".to_string(), "later".to_string()];
        tally(
            Counting {
                choices: &choices,
                rule,
                threshold: 2.0 / 3.0,
                quorum,
                on_tie,
            },
            ballots,
        )
        .1
    }

    #[test]
    fn each_rule_decides_as_documented() {
        use VoteRule::*;
        let b = |v: &str, c: &str| ballot(v, Some(c), 1.0, false);
        let two_one = [b("a", "yes"), b("b", "yes"), b("c", "no")];
        let three = [b("a", "yes"), b("b", "yes"), b("c", "yes")];
        let spread = [b("a", "yes"), b("b", "no"), b("c", "later"), b("d", "yes")];
        // (rule, ballots, outcome): Ok(winner) or Err(start of the reason)
        let table: Vec<(VoteRule, &[Ballot], Result<&str, &str>)> = vec![
            (Majority, &two_one, Ok("yes")),
            (Majority, &spread, Err("no majority")),
            (Supermajority, &two_one, Ok("yes")),
            (Supermajority, &spread, Err("no supermajority")),
            (Weighted, &spread, Ok("yes")),
            (Unanimous, &three, Ok("yes")),
            (Unanimous, &two_one, Err("not unanimous")),
        ];
        for (rule, ballots, want) in table {
            let got = count(rule, 1, OnTie::Fail, ballots);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "{rule:?}"),
                Err(start) => assert!(
                    got.as_ref().is_err_and(|e| e.starts_with(start)),
                    "{rule:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn weights_can_outvote_a_head_count() {
        let ballots = [
            ballot("expert", Some("no"), 3.0, false),
            ballot("a", Some("yes"), 1.0, false),
            ballot("b", Some("yes"), 1.0, false),
        ];
        assert_eq!(
            count(VoteRule::Weighted, 1, OnTie::Fail, &ballots).as_deref(),
            Ok("no")
        );
        assert_eq!(
            count(VoteRule::Majority, 1, OnTie::Fail, &ballots).as_deref(),
            Ok("no")
        );
        // 3 of 5 is not two thirds.
        assert!(count(VoteRule::Supermajority, 1, OnTie::Fail, &ballots).is_err());
    }

    #[test]
    fn a_missing_quorum_fails_and_missing_voters_do_not_count() {
        let ballots = [
            ballot("a", Some("yes"), 1.0, false),
            ballot("b", None, 1.0, false),
            ballot("c", None, 1.0, false),
        ];
        let got = count(VoteRule::Majority, 2, OnTie::Fail, &ballots);
        assert_eq!(
            got,
            Err("no quorum: 1 of 3 voters cast a ballot, the quorum is 2".into())
        );
        // With a quorum of one, the one ballot cast is all the weight: a majority.
        assert_eq!(
            count(VoteRule::Majority, 1, OnTie::Fail, &ballots).as_deref(),
            Ok("yes")
        );
    }

    #[test]
    fn a_veto_blocks_the_winner_it_did_not_vote_for() {
        let ballots = [
            ballot("a", Some("yes"), 1.0, false),
            ballot("b", Some("yes"), 1.0, false),
            ballot("security", Some("no"), 1.0, true),
        ];
        let got = count(VoteRule::Majority, 1, OnTie::Fail, &ballots);
        assert_eq!(
            got,
            Err("`yes` is vetoed by security, who chose `no`: security's reason".into())
        );
        // A veto holder who votes with the winner blocks nothing.
        let agree = [
            ballot("a", Some("yes"), 1.0, false),
            ballot("security", Some("yes"), 1.0, true),
        ];
        assert_eq!(
            count(VoteRule::Majority, 1, OnTie::Fail, &agree).as_deref(),
            Ok("yes")
        );
    }

    #[test]
    fn a_tie_fails_or_goes_to_the_first_listed_choice() {
        let ballots = [
            ballot("a", Some("no"), 1.0, false),
            ballot("b", Some("yes"), 1.0, false),
        ];
        for rule in [VoteRule::Majority, VoteRule::Weighted] {
            assert_eq!(
                count(rule, 1, OnTie::Fail, &ballots),
                Err("tie between `yes` and `no` (1 each)".into()),
                "{rule:?}"
            );
            // `yes` is listed before `no` in the choices.
            assert_eq!(
                count(rule, 1, OnTie::FirstChoice, &ballots).as_deref(),
                Ok("yes"),
                "{rule:?}"
            );
        }
    }
}
