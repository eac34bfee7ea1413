//! HTTP(S) downloads: timeouts, retries with backoff on transient failures, and a
//! byte progress bar on a terminal for large files.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use super::Options;

const LARGE: u64 = 4 << 20;

/// Streams `url` into `sink`; the error says what went wrong.
pub fn download(url: &str, sink: &mut dyn Write, options: &Options) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(options.connect_timeout))
        .timeout_recv_body(Some(options.body_timeout))
        .timeout_recv_response(Some(options.read_timeout))
        .http_status_as_error(false)
        .max_redirects(10)
        .build()
        .into();
    let mut last = String::new();
    for attempt in 0..options.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        let response = match agent.get(url).call() {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = response.status().as_u16();
        if status >= 500 {
            last = format!("HTTP {status}");
            continue;
        }
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = response.into_body();
        let reader = body.as_reader();
        // A partial body already went into the sink: retrying would append to it.
        return copy(reader, sink, length, url);
    }
    Err(last)
}

fn copy(
    mut reader: impl Read,
    sink: &mut dyn Write,
    length: Option<u64>,
    url: &str,
) -> Result<(), String> {
    let bar = (std::io::stderr().is_terminal() && length.is_some_and(|l| l >= LARGE)).then(|| {
        let bar = indicatif::ProgressBar::new(length.unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(super::basename(url).to_string());
        bar
    });
    if bar.is_none() {
        eprintln!("fetching {url}");
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("reading the body after {total} bytes: {e}")),
        };
        if n == 0 {
            break;
        }
        sink.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        total += n as u64;
        if let Some(b) = &bar {
            b.set_position(total);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(l) = length {
        if total != l {
            return Err(format!("truncated: got {total} of {l} bytes"));
        }
    }
    Ok(())
}
