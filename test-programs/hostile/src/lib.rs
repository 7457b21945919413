//! A plugin that misbehaves when a message tells it to, so the host's fault
//! isolation and sandbox can be tested against a real component. The
//! message's value selects the behaviour; every other message is recorded in
//! keyed state (`seen/{value}`) and forwarded.
//!
//! | value        | what the plugin does |
//! |--------------|----------------------|
//! | `panic`      | panics (a trap) |
//! | `loop`       | loops forever (the host must interrupt it) |
//! | `alloc`      | allocates and touches memory until it traps at the cap |
//! | `sleep:MS`   | sleeps MS milliseconds in a host call, then emits `slept` |
//! | `read-file`  | reads `/etc/passwd` and lists `.`; emits `file: denied: <error>; dir: denied: <error>`, or `LEAK: ...` for what succeeded |
//! | `env`, `env:NAME` | reads `HOME`, `PATH` and `NAME` (if given); emits `HOME: denied; PATH: denied; NAME: value=<v>` (`denied` where a variable is not visible) |
//! | `socket`     | connects TCP to 127.0.0.1:9 and binds UDP; emits `tcp: denied: <error>; udp: denied: <error>`, or `LEAK: ...` |
//! | `clock`      | emits `wall_ms=<ms since the Unix epoch> instant_advances=<bool>` |
//! | `print:N`    | prints N lines to stdout (`stdout line i`) and N to stderr (`stderr line i`); emits `printed N` |
//! | `big:N`      | emits one record of N bytes |
//! | `many:N`     | emits N records (`0`, `1`, ...) |
//! | `count:K`    | adds 1 to counter `count/K` in keyed state; emits `K=<count>` (state across instances and plugin swaps) |
//! | `count-reject:K` | adds 1 to counter `count/K` in keyed state, then rejects the message with `counted K=<count>` (the SDK drops the write: a rejected message leaves no state) |
//! | `count-many:K:N` | adds 1 to counter `count/K` in keyed state, then emits N records (over the stage's `max_outputs_per_message`, the host refuses the result and its write) |
//! | `state-bomb:N` | writes N MiB of keyed state in one call, 64 KiB values under distinct keys (`bomb/<offset>/<i>`); emits `bombed N` |
//! | `labels:N`   | sets gauge `labelled` with the invalid label names `stage`, `9x` and ``, and counter `bad-name`, then gauge `labelled` with N distinct label sets (`i` = 0..N, plus `text` with a backslash, a quote and a newline); emits `labelled N` |
//! | `log-flood:N` | calls the `log` import N times at info level (`flood i`), the first message 10,000 bytes long; emits `logged N` |
//! | `reason:N`   | rejects the message with a reason of N bytes |
//!
//! Every emitted record goes to the `default` output. With `init_sleep_ms`
//! in `[stage.config]`, `init` sleeps that long first.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_plugin::{
    Emitter, InitContext, Message, OutputId, Processor, export_processor, log, metrics, state,
};

pub struct Hostile {
    out: OutputId,
}

/// Parses the number after `prefix` in `value`, e.g. `print:5`.
fn arg(value: &str, prefix: &str) -> Option<usize> {
    value.strip_prefix(prefix)?.parse().ok()
}

fn spin_forever() -> ! {
    let mut x = 0u64;
    loop {
        // `black_box` keeps the loop and its counter from being optimised
        // into nothing.
        x = black_box(x.wrapping_add(1));
    }
}

fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        // Touch every page, so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = i as u8 | 1;
        }
        hoard.push(black_box(chunk));
    }
}

fn read_file() -> String {
    let file = match std::fs::read_to_string("/etc/passwd") {
        Ok(content) => format!("LEAK: {content}"),
        Err(e) => format!("denied: {e}"),
    };
    let dir = match std::fs::read_dir(".") {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            format!("LEAK: {}", names.join(","))
        }
        Err(e) => format!("denied: {e}"),
    };
    format!("file: {file}; dir: {dir}")
}

fn env(granted: Option<&str>) -> String {
    let mut names = vec!["HOME", "PATH"];
    names.extend(granted);
    let seen: Vec<String> = names
        .iter()
        .map(|name| match std::env::var(name) {
            Ok(v) => format!("{name}: value={v}"),
            Err(_) => format!("{name}: denied"),
        })
        .collect();
    let all = std::env::vars().count();
    format!("{}; vars={all}", seen.join("; "))
}

fn socket() -> String {
    let tcp = match std::net::TcpStream::connect("127.0.0.1:9") {
        Ok(_) => "LEAK: connected".to_string(),
        Err(e) => format!("denied: {e}"),
    };
    let udp = match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => match s.send_to(b"x", "127.0.0.1:9") {
            Ok(_) => "LEAK: sent a datagram".to_string(),
            Err(e) => format!("LEAK: bound, send denied: {e}"),
        },
        Err(e) => format!("denied: {e}"),
    };
    format!("tcp: {tcp}; udp: {udp}")
}

fn clock() -> String {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let start = Instant::now();
    let mut x = 0u64;
    for i in 0..5_000_000u64 {
        x = black_box(x.wrapping_add(i));
    }
    let instant_advances = start.elapsed() > Duration::ZERO;
    format!("wall_ms={wall_ms} instant_advances={instant_advances}")
}

fn print(n: usize) -> String {
    for i in 0..n {
        println!("stdout line {i}");
        eprintln!("stderr line {i}");
    }
    let _ = std::io::stdout().flush();
    format!("printed {n}")
}

/// Adds 1 to counter `count/{name}` in keyed state; returns the new count.
fn count(name: &str) -> u64 {
    let key = format!("count/{name}");
    let n = state::get(key.as_bytes())
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
        + 1;
    state::set(key.as_bytes(), &n.to_le_bytes());
    n
}

fn state_bomb(offset: i64, mib: usize) -> String {
    let value = vec![0xabu8; 64 << 10];
    for i in 0..mib * 16 {
        state::set(format!("bomb/{offset}/{i}").as_bytes(), &value);
    }
    format!("bombed {mib}")
}

fn labels(n: usize) -> String {
    // The invalid ones first, while the stage still has room for series.
    for bad in ["stage", "9x", ""] {
        metrics::gauge_set("labelled", &[(bad, "x")], 1.0);
    }
    metrics::counter_add("bad-name", &[], 1);
    for i in 0..n {
        let i = i.to_string();
        metrics::gauge_set("labelled", &[("i", &i), ("text", "a\\b\"c\nd")], 1.0);
    }
    format!("labelled {n}")
}

fn log_flood(n: usize) -> String {
    for i in 0..n {
        if i == 0 {
            log::info(&"L".repeat(10_000));
        } else {
            log::info(&format!("flood {i}"));
        }
    }
    format!("logged {n}")
}

impl Processor for Hostile {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        // `init_sleep_ms` in [stage.config]: a slow init (a plugin building
        // large tables from its config).
        let config: weir_plugin::serde_json::Value = ctx.config()?;
        if let Some(ms) = config.get("init_sleep_ms").and_then(|v| v.as_u64()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(Hostile {
            out: ctx.output("default")?,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let bytes = msg.value().unwrap_or_default();
        let value = std::str::from_utf8(bytes).unwrap_or_default();
        let reply = match value {
            "panic" => panic!("told to panic"),
            "loop" => spin_forever(),
            "alloc" => memory_bomb(),
            "read-file" => read_file(),
            "env" => env(None),
            "socket" => socket(),
            "clock" => clock(),
            _ if value.starts_with("env:") => env(Some(&value[4..])),
            _ if value.starts_with("sleep:") => {
                let ms = arg(value, "sleep:").ok_or("bad sleep:MS")?;
                std::thread::sleep(Duration::from_millis(ms as u64));
                "slept".to_string()
            }
            _ if value.starts_with("print:") => print(arg(value, "print:").ok_or("bad print:N")?),
            _ if value.starts_with("big:") => {
                let n = arg(value, "big:").ok_or("bad big:N")?;
                out.emit(self.out, &vec![b'x'; n]);
                return Ok(());
            }
            _ if value.starts_with("count:") => {
                let name = &value["count:".len()..];
                format!("{name}={}", count(name))
            }
            _ if value.starts_with("count-reject:") => {
                let name = &value["count-reject:".len()..];
                return Err(format!("counted {name}={}", count(name)));
            }
            _ if value.starts_with("count-many:") => {
                let (name, n) = value["count-many:".len()..]
                    .split_once(':')
                    .ok_or("bad count-many:K:N")?;
                let n: usize = n.parse().map_err(|_| "bad count-many:K:N")?;
                count(name);
                for i in 0..n {
                    out.emit(self.out, i.to_string().as_bytes());
                }
                return Ok(());
            }
            _ if value.starts_with("state-bomb:") => state_bomb(
                msg.offset(),
                arg(value, "state-bomb:").ok_or("bad state-bomb:N")?,
            ),
            _ if value.starts_with("labels:") => {
                labels(arg(value, "labels:").ok_or("bad labels:N")?)
            }
            _ if value.starts_with("log-flood:") => {
                log_flood(arg(value, "log-flood:").ok_or("bad log-flood:N")?)
            }
            _ if value.starts_with("reason:") => {
                return Err("r".repeat(arg(value, "reason:").ok_or("bad reason:N")?));
            }
            _ if value.starts_with("many:") => {
                let n = arg(value, "many:").ok_or("bad many:N")?;
                for i in 0..n {
                    out.emit(self.out, i.to_string().as_bytes());
                }
                return Ok(());
            }
            _ => {
                let mut key = b"seen/".to_vec();
                key.extend_from_slice(bytes);
                state::set(&key, b"1");
                out.forward(self.out, msg);
                return Ok(());
            }
        };
        out.emit(self.out, reply.as_bytes());
        Ok(())
    }
}

export_processor!(Hostile);
