//! A seeded, deterministic simulation of the whole billing and payment flow.
//!
//! It drives the real command layer (the real store on a file, the real writer thread, the
//! real job handlers and webhook dispatch) through random interleavings of usage (in order,
//! late, duplicated, extreme), billing runs, pay, void, credits, refunds, credit notes, job
//! executions, reconciliations, webhook deliveries and crashes with restart, against a
//! fault-injecting payment provider with its own books ([`provider`]). After every step it
//! checks the safety invariants, and at every point of rest the balance invariants
//! ([`invariants`]).
//!
//! One seed is one exact sequence: time is simulated and ids are seeded (the test seams in
//! `clock` and `id`), the provider and the scheduler draw from generators seeded by it, and
//! everything runs on one thread plus the writer thread, one command at a time. A failing seed
//! prints itself, the step and the operation, and the command that replays it.
//!
//! - `cargo test --lib sim`: the CI budget (a few dozen seeds), and the PostgreSQL run below;
//! - `SIM_SEEDS=5000 cargo test --lib sim::sim -- --exact`: thousands (`SIM_STEPS` sets steps
//!   per seed);
//! - `SIM_SEED=N cargo test --lib sim`: replays seed N alone, printing every step.
//!
//! `sim_postgres` runs the same profiles, operations and invariants on PostgreSQL with two
//! nodes: two stores on one fresh database per seed (on a throwaway local cluster started once
//! per test binary), each with its own writer thread, job handlers and watcher, as two daemons
//! sharing a database. Every write, read, job execution and webhook delivery goes to a node the
//! seed picks, so one customer's or invoice's rows are written from both; a crash takes down one
//! node or both. Now and then a keyed request, a duplicated webhook, an ingested batch, a billing
//! run, a pay and a void, or a job's lease or completion goes to both nodes at the same moment
//! ([`World::race`]), so their transactions overlap and one is serialized out and applied again:
//! exactly one may take effect. And now and then a node's worker is slow: its job's handler
//! runs, other steps follow on either node, and its completion commits at a later job step. Re-deriving every invoice from
//! its events costs many round trips there, so after a step that changed no invoice it is
//! skipped, and at rest it is done in full. It runs one seed per profile for 100 steps by
//! default; `SIM_PG_SEEDS` sets its seed count, `SIM_STEPS` and `SIM_SEED` apply to it too. It
//! skips, saying why, when no PostgreSQL binaries are installed, unless `REQUIRE_POSTGRES` is
//! set (as in CI): then it fails.
//!
//! What is deterministic on PostgreSQL: the operations, their arguments and the node each goes
//! to, and, while the nodes take turns, every outcome (one transaction at a time cannot
//! conflict). What is not: a racing step runs two transactions at once, so which node wins, how
//! often the loser is serialized out and applied again (drawing fresh ids), and so everything
//! after it may differ between runs of one seed. The invariants must hold whichever way a race
//! goes; a seed that fails only sometimes is a race to look at.

mod alerts;
mod api_keys;
mod coupons;
mod credit_notes;
mod entitlements;
mod invariants;
mod meters;
mod ops;
mod postgres;
mod profile;
mod progressive;
mod provider;
mod rng;
mod taxes;
mod wallet;
mod world;

use ops::{Kind, KINDS};
use profile::PROFILES;
use provider::Provider;
use rng::Rng;
use world::{Deployment, World};

/// Seeds run by default (CI).
const CI_SEEDS: u64 = 64;
/// Steps per seed by default.
const CI_STEPS: usize = 200;
/// Seeds of the PostgreSQL run by default (CI): one per profile. Each commit and each read
/// there is a round trip to the server, and the checks after every step read a lot.
const CI_PG_SEEDS: u64 = 9;
/// Steps per seed of the PostgreSQL run by default.
const CI_PG_STEPS: usize = 100;

/// Why a seed failed, with what replays it.
struct Failure {
    test: &'static str,
    seed: u64,
    profile: &'static str,
    step: usize,
    op: String,
    violation: String,
    trail: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed={} profile={} step={} op={}\n  violated: {}",
            self.seed, self.profile, self.step, self.op, self.violation
        )?;
        writeln!(f, "  last steps:")?;
        for line in &self.trail {
            writeln!(f, "    {line}")?;
        }
        write!(
            f,
            "  replay: SIM_SEED={} cargo test --lib sim::{} -- --exact",
            self.seed, self.test
        )
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Which run a seed belongs to: its test's name and how it deploys.
struct Run {
    test: &'static str,
    deploy: fn(u64) -> Result<Deployment, String>,
}

/// Runs one seed for `steps` steps; `verbose` prints every step as it runs.
fn run_seed(run: &Run, seed: u64, steps: usize, verbose: bool) -> Result<(), Box<Failure>> {
    let profile = PROFILES[(seed % PROFILES.len() as u64) as usize];
    let mut trail: Vec<String> = Vec::new();
    let fail = |step: usize, op: String, violation: String, trail: &[String]| {
        Box::new(Failure {
            test: run.test,
            seed,
            profile: profile.name,
            step,
            op,
            violation,
            trail: trail.iter().rev().take(25).rev().cloned().collect(),
        })
    };
    let provider = Provider::new(seed, profile.faults);
    let mut world = (run.deploy)(seed)
        .and_then(|deployment| World::deploy(seed, provider, deployment))
        .and_then(|mut w| ops::setup(&mut w, &profile).map(|()| w))
        .map_err(|v| fail(0, "setup".into(), v, &trail))?;
    let mut chooser = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    for step in 1..=steps {
        let kind = if step == steps {
            Kind::Settle
        } else {
            KINDS[chooser.weighted(&profile.weights).unwrap_or(0)]
        };
        let mut note = String::new();
        let applied = ops::apply(&mut world, kind, &mut note);
        let op = format!("{kind:?}({note})");
        trail.push(format!("{step}: {op}"));
        if verbose {
            eprintln!("{step}: {op}");
        }
        let checked = applied
            .and_then(|()| invariants::after_every_step(&world))
            .and_then(|()| match kind {
                Kind::Settle => invariants::at_rest(&world),
                _ => Ok(()),
            });
        if let Err(violation) = checked {
            return Err(fail(step, op, violation, &trail));
        }
    }
    Ok(())
}

/// Runs the seeds the knobs ask for (`seeds_knob` names the count's variable; `SIM_STEPS`
/// overrides `default_steps`) and fails listing every failing seed.
fn run_seeds(run: &Run, seeds_knob: &str, default_seeds: u64, default_steps: usize) {
    let steps = env_number("SIM_STEPS").map_or(default_steps, |s| s as usize);
    let seeds: Vec<u64> = match env_number("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number(seeds_knob).unwrap_or(default_seeds)).collect(),
    };
    let verbose = seeds.len() == 1;
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(failure) = run_seed(run, seed, steps, verbose) {
            eprintln!("{failure}\n");
            failures.push(failure);
        }
    }
    eprintln!(
        "{}: {} seeds × {steps} steps in {:.1} s, {} failed",
        run.test,
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    let summary: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "seed={} ({}) step {}: {}",
                f.seed, f.profile, f.step, f.violation
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        summary.join("\n")
    );
}

#[test]
fn sim() {
    let run = Run {
        test: "sim",
        deploy: |_| Ok(Deployment::Redb),
    };
    run_seeds(&run, "SIM_SEEDS", CI_SEEDS, CI_STEPS);
}

#[test]
fn sim_postgres() {
    if postgres::cluster().is_none() {
        return;
    }
    let run = Run {
        test: "sim_postgres",
        deploy: postgres::fresh_database,
    };
    run_seeds(&run, "SIM_PG_SEEDS", CI_PG_SEEDS, CI_PG_STEPS);
}

#[test]
fn a_seed_replays_exactly() {
    let trace = |seed: u64| {
        let provider = Provider::new(seed, PROFILES[0].faults);
        let mut world = World::new(seed, provider).expect("world");
        ops::setup(&mut world, &PROFILES[0]).expect("setup");
        let mut chooser = Rng::new(seed);
        let mut out = Vec::new();
        for _ in 0..40 {
            let kind = KINDS[chooser.weighted(&PROFILES[0].weights).unwrap_or(0)];
            let mut note = String::new();
            let applied = ops::apply(&mut world, kind, &mut note);
            out.push(format!("{kind:?}({note}) {applied:?}"));
        }
        out
    };
    assert_eq!(trace(7), trace(7));
}
