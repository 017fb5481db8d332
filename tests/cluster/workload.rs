//! A workload for cluster tests: executions that wait for an activity worker and a timer,
//! started and answered through whichever nodes are up, with retries across failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_testkit::{pb, Client, Cluster, Code};

/// The endpoints of the nodes that are up; callers pick one per attempt.
#[derive(Clone, Default)]
pub struct Pool {
    endpoints: Arc<Mutex<Vec<String>>>,
    turn: Arc<AtomicUsize>,
    /// One connection per endpoint (a channel reconnects by itself).
    clients: Arc<Mutex<BTreeMap<String, Client>>>,
}

impl Pool {
    pub fn of(c: &Cluster) -> Pool {
        let p = Pool::default();
        p.set(c);
        p
    }

    /// A pool of some nodes only.
    pub fn only(c: &Cluster, ids: &[u64]) -> Pool {
        let p = Pool::default();
        *p.endpoints.lock().unwrap() = ids.iter().map(|i| c.nodes[i].endpoint()).collect();
        p
    }

    /// Refreshes the endpoints from the running nodes.
    pub fn set(&self, c: &Cluster) {
        let eps: Vec<String> = c
            .nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.endpoint())
            .collect();
        self.clients.lock().unwrap().retain(|e, _| eps.contains(e));
        *self.endpoints.lock().unwrap() = eps;
    }

    pub async fn client(&self) -> Option<Client> {
        let eps = self.endpoints.lock().unwrap().clone();
        for _ in 0..eps.len() {
            let i = self.turn.fetch_add(1, Ordering::Relaxed) % eps.len().max(1);
            if let Some(c) = self.clients.lock().unwrap().get(&eps[i]) {
                return Some(c.clone());
            }
            if let Ok(c) = Client::connect(&eps[i]).await {
                self.clients
                    .lock()
                    .unwrap()
                    .insert(eps[i].clone(), c.clone());
                return Some(c);
            }
        }
        None
    }
}

/// Whether an API error is the cluster saying "not now" rather than "no".
fn transient(e: &trellis_testkit::ApiError) -> bool {
    matches!(
        e.code,
        Code::ServiceUnavailable | Code::NotLeader | Code::InternalFailure
    )
}

/// Runs `f` on some node until it gives a definitive answer (or `deadline`).
pub async fn retry<T, F, Fut>(pool: &Pool, deadline: Duration, f: F) -> Result<T, String>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, trellis_testkit::Status>>,
{
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < deadline {
        let Some(c) = pool.client().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match f(c).await {
            Ok(v) => return Ok(v),
            Err(s) => {
                let e = trellis_testkit::ApiError::from_status(&s);
                if !transient(&e) {
                    return Err(e.to_string());
                }
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err(format!("gave up after {deadline:?}: {last}"))
}

pub const ROLE: &str = "arn:aws:iam::000000000000:role/test";

/// Creates the activity and the machine: Task (activity) -> Wait 1 s -> Pass. The task's
/// timeout and retries only recover hand-outs lost with a killed node (a task handed to a
/// worker whose reply died with the node is lost, as on AWS).
pub async fn setup(pool: &Pool, name: &str) -> (String, String) {
    let activity = create_activity(pool, &format!("{name}-work")).await;
    let def = json!({
        "StartAt": "Work",
        "States": {
            "Work": {"Type": "Task", "Resource": activity, "TimeoutSeconds": 60,
                     "Retry": [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 3, "IntervalSeconds": 1}],
                     "Next": "Nap"},
            "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
            "Done": {"Type": "Pass", "End": true}
        }
    });
    let machine = create_machine(pool, name, &def).await;
    (activity, machine)
}

/// Creates a STANDARD state machine through some node; returns its ARN.
pub async fn create_machine(pool: &Pool, name: &str, definition: &Value) -> String {
    let def = definition.to_string();
    retry(pool, Duration::from_secs(30), |mut c| {
        let def = def.clone();
        async move {
            c.state_machines
                .create_state_machine(pb::CreateStateMachineRequest {
                    name: name.to_string(),
                    definition: def,
                    role_arn: ROLE.into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().state_machine_arn)
        }
    })
    .await
    .expect("create machine")
}

/// Creates an activity through some node; returns its ARN.
pub async fn create_activity(pool: &Pool, name: &str) -> String {
    retry(pool, Duration::from_secs(30), |mut c| async move {
        c.activities
            .create_activity(pb::CreateActivityRequest { name: name.into() })
            .await
            .map(|r| r.into_inner().activity_arn)
    })
    .await
    .expect("create activity")
}

/// A machine without tasks: Wait 1 s, then a Pass that makes the same output the workers
/// make.
pub async fn setup_waits(pool: &Pool, name: &str) -> String {
    let def = json!({
        "StartAt": "Nap",
        "States": {
            "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
            "Done": {"Type": "Pass", "Parameters": {"n.$": "$.n", "double.$": "States.MathAdd($.n, $.n)"}, "End": true}
        }
    });
    create_machine(pool, name, &def).await
}

/// Activity workers: each long-polls some node, answers `{"n": n, "double": 2n}`, and keeps
/// sending its answer until a node takes it or says the task is gone.
pub fn workers(
    pool: &Pool,
    activity: &str,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    workers_holding(pool, activity, count, stop, None)
}

/// How long workers hold each task before answering, and how many they hold at once.
#[derive(Clone)]
pub struct Hold {
    pub time: Duration,
    pub now: Arc<AtomicUsize>,
    pub most: Arc<AtomicUsize>,
}

/// [`workers`] that hold each task for a while, counting how many they hold at once.
pub fn workers_holding(
    pool: &Pool,
    activity: &str,
    count: usize,
    stop: Arc<AtomicBool>,
    hold: Option<Hold>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..count)
        .map(|w| {
            let pool = pool.clone();
            let activity = activity.to_string();
            let stop = stop.clone();
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut c) = pool.client().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let poll = c.activities.get_activity_task(pb::GetActivityTaskRequest {
                        activity_arn: activity.clone(),
                        worker_name: format!("w{w}"),
                    });
                    // Longer than the 60 s long poll, as SDKs do: a poll given up early may take a
                    // task with it.
                    let task = match tokio::time::timeout(Duration::from_secs(70), poll).await {
                        Ok(Ok(t)) => t.into_inner(),
                        _ => continue,
                    };
                    if task.task_token.is_empty() {
                        continue;
                    }
                    if let Some(h) = &hold {
                        let now = h.now.fetch_add(1, Ordering::SeqCst) + 1;
                        h.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(h.time).await;
                        h.now.fetch_sub(1, Ordering::SeqCst);
                    }
                    let input: Value = serde_json::from_str(&task.input).unwrap();
                    let n = input["n"].as_u64().unwrap();
                    if answer(&pool, n, &task.task_token).await.is_ok() {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect()
}

/// Answers task `n` as the workers do (`{"n": n, "double": 2n}`), through some node, until
/// a node takes the answer or says the task is gone. Every attempt names the same call, so
/// one sent again after a lost reply finds its answer taken and succeeds.
pub async fn answer(pool: &Pool, n: u64, token: &str) -> Result<(), String> {
    let output = json!({"n": n, "double": 2 * n}).to_string();
    retry(pool, Duration::from_secs(60), |mut c| {
        let (token, output) = (token.to_string(), output.clone());
        async move {
            c.activities
                .send_task_success(pb::SendTaskSuccessRequest {
                    task_token: token,
                    output,
                    request_id: n + 1,
                })
                .await
                .map(drop)
        }
    })
    .await
}

/// Starts execution `prefix-i` with input `{"n": i}` for each i, `concurrency` at a time,
/// retrying each start until it is acknowledged.
pub async fn start_all(
    pool: &Pool,
    machine: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
    concurrency: usize,
) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(range.start as usize));
    let end = range.end as usize;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, machine, prefix, next) = (
            pool.clone(),
            machine.to_string(),
            prefix.to_string(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), String>(());
                }
                let (machine, name) = (machine.clone(), format!("{prefix}-{i}"));
                retry(&pool, Duration::from_secs(60), |mut c| {
                    let (machine, name) = (machine.clone(), name.clone());
                    async move {
                        c.executions
                            .start_execution(pb::StartExecutionRequest {
                                state_machine_arn: machine,
                                name,
                                input: json!({"n": i}).to_string(),
                            })
                            .await
                            .map(drop)
                    }
                })
                .await
                // Names are unique here: "already exists" means an earlier attempt whose
                // reply was lost started it, and it has finished since (AWS answers so for a
                // closed execution).
                .or_else(|e| {
                    if e.starts_with("ExecutionAlreadyExists") {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("start {prefix}-{i}: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Status counts of a machine's executions.
pub async fn statuses(pool: &Pool, machine: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let (m, t) = (machine.to_string(), token.clone());
        let page = retry(pool, Duration::from_secs(30), |mut c| {
            let (m, t) = (m.clone(), t.clone());
            async move {
                c.executions
                    .list_executions(pb::ListExecutionsRequest {
                        state_machine_arn: m,
                        max_results: 1000,
                        next_token: t,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?;
        for e in page.executions {
            *out.entry(e.status).or_default() += 1;
        }
        if page.next_token.is_empty() {
            return Ok(out);
        }
        token = page.next_token;
    }
}

/// Waits until `n` executions of the machine succeeded.
pub async fn wait_succeeded(
    pool: &Pool,
    machine: &str,
    n: usize,
    timeout: Duration,
) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let s = statuses(pool, machine).await?;
        if s.get("SUCCEEDED").copied().unwrap_or(0) == n {
            return Ok(());
        }
        if t0.elapsed() > timeout || s.contains_key("FAILED") {
            return Err(format!(
                "after {:?}: {s:?}; {}",
                t0.elapsed(),
                explain(pool, machine).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for the executions `prefix-i` to succeed, then verifies them.
pub async fn verify_when_done(
    pool: &Pool,
    machine: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
) -> Result<(), String> {
    let base = machine.replace(":stateMachine:", ":execution:");
    let t0 = Instant::now();
    for i in range.clone() {
        let arn = format!("{base}:{prefix}-{i}");
        loop {
            let e = describe(pool, &arn).await?;
            if e.status != "RUNNING" {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(format!("{arn} still running"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    verify(pool, machine, prefix, range).await
}

/// Checks every execution: the right output, one ExecutionSucceeded, and a history whose ids
/// run 1..=n without a gap or a repeat.
pub async fn verify(
    pool: &Pool,
    machine: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
) -> Result<(), String> {
    let base = machine.replace(":stateMachine:", ":execution:");
    for i in range {
        let arn = format!("{base}:{prefix}-{i}");
        let e = describe(pool, &arn).await?;
        if e.status != "SUCCEEDED" {
            return Err(format!("{arn}: {}", e.status));
        }
        let out: Value = serde_json::from_str(e.output.as_deref().unwrap_or("null"))
            .map_err(|x| x.to_string())?;
        if out != json!({"n": i, "double": 2 * i}) {
            return Err(format!("{arn}: output {out}"));
        }
        let h = history(pool, &arn).await?;
        for (k, ev) in h.events.iter().enumerate() {
            if ev.id != k as u64 + 1 {
                return Err(format!("{arn}: event {} at position {}", ev.id, k + 1));
            }
        }
        let ends = h
            .events
            .iter()
            .filter(|e| e.r#type == "ExecutionSucceeded")
            .count();
        if ends != 1 {
            return Err(format!("{arn}: {ends} ExecutionSucceeded events"));
        }
    }
    Ok(())
}

/// The history of one execution that did not succeed, for a failing test's message.
async fn explain(pool: &Pool, machine: &str) -> String {
    let m = machine.to_string();
    let list = retry(pool, Duration::from_secs(10), |mut c| {
        let m = m.clone();
        async move {
            c.executions
                .list_executions(pb::ListExecutionsRequest {
                    state_machine_arn: m,
                    status_filter: "FAILED".into(),
                    max_results: 1,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    })
    .await;
    let Some(e) = list.ok().and_then(|l| l.executions.into_iter().next()) else {
        return "no failed execution".into();
    };
    let h = history(pool, &e.execution_arn).await;
    match h {
        Ok(h) => format!(
            "{}:\n{}",
            e.execution_arn,
            h.events
                .iter()
                .map(|e| format!("  {} {} {}", e.id, e.r#type, e.details_json))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(x) => format!("{}: {x}", e.execution_arn),
    }
}

/// DescribeExecution on some node, retried through failures.
pub async fn describe(pool: &Pool, arn: &str) -> Result<pb::Execution, String> {
    retry(pool, Duration::from_secs(30), |mut c| {
        let a = arn.to_string();
        async move {
            c.executions
                .describe_execution(pb::DescribeExecutionRequest { execution_arn: a })
                .await
                .map(|r| r.into_inner())
        }
    })
    .await
}

/// The first 1,000 history events of an execution, retried through failures.
pub async fn history(pool: &Pool, arn: &str) -> Result<pb::GetExecutionHistoryResponse, String> {
    retry(pool, Duration::from_secs(30), |mut c| {
        let a = arn.to_string();
        async move {
            c.executions
                .get_execution_history(pb::GetExecutionHistoryRequest {
                    execution_arn: a,
                    max_results: 1000,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    })
    .await
}
