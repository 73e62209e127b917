//! Temp names that carry their owner (pid, start time, host), so that the next run beside the
//! same target can tell what a killed run left ([`sweep_stale`]) from what a live run is writing.

use std::path::Path;

/// Temp names: `.embed-transplant-<pid>-<start>-<host>-<random>.tmp` (`.old` for a directory
/// moved aside). `<start>` is when the process started (Linux: clock ticks after boot, from
/// /proc; 0 elsewhere), so that a later process that happens to get the same pid is not taken
/// for the owner; `<host>` tags the machine and pid namespace ([`host_tag`]), so that a run on
/// another machine or in another container sharing the directory, whose pids mean nothing here,
/// is never taken for dead.
const TEMP_PREFIX: &str = ".embed-transplant-";

pub(super) fn temp_prefix() -> String {
    format!(
        "{TEMP_PREFIX}{}-{}-{}-",
        std::process::id(),
        start_time(std::process::id()).unwrap_or(0),
        host_tag()
    )
}

/// The owner (pid, start, host) a temp name of ours carries; None for any other name.
fn temp_owner(name: &str) -> Option<(u32, u64, &str)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let rest = rest
        .strip_suffix(".tmp")
        .or_else(|| rest.strip_suffix(".old"))?;
    let mut parts = rest.splitn(4, '-');
    let pid = parts.next()?;
    let start = parts.next()?;
    let host = parts.next()?;
    let random = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = host.len() == 8 && host.bytes().all(|b| b.is_ascii_hexdigit());
    if !(digits(pid)
        && digits(start)
        && hex
        && !random.is_empty()
        && random.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return None;
    }
    Some((pid.parse().ok()?, start.parse().ok()?, host))
}

/// 8 hex digits naming where pids mean what they mean here: a hash of the kernel's boot id and
/// this process's pid namespace (Linux), else of the host name.
fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let mut id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        if let Ok(ns) = std::fs::read_link("/proc/self/ns/pid") {
            id.push_str(&ns.to_string_lossy());
        }
        if id.is_empty() {
            id = host_name();
        }
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:08x}", (h ^ (h >> 32)) as u32)
    })
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    String::new()
}

/// When process `pid` started (field 22 of /proc/<pid>/stat); None when there is no such
/// process or no /proc.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that made a temp name still runs: the same pid with the same start time;
/// where the start time cannot be read (no /proc, or another user's process hidden by
/// `hidepid`), any process with that pid counts, to be safe.
fn owner_alive(pid: u32, start: u64) -> bool {
    if let Some(s) = start_time(pid) {
        return s == start;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, start);
        true
    }
}

/// Removes what killed runs left in `dir`: entries named by our temp pattern whose owner no
/// longer runs. Nothing else is touched, and links are removed, never followed.
pub(super) fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, start, host)) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if host != host_tag() || owner_alive(pid, start) {
            continue;
        }
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&p);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_owner_and_only_dead_owners_are_swept() {
        let me = std::process::id();
        let start = start_time(me).unwrap_or(0);
        let ours = temp_prefix();
        let host = host_tag();
        assert_eq!(
            temp_owner(&format!("{ours}a1B2c3.tmp")),
            Some((me, start, host))
        );
        for not_ours in [
            ".embed-transplant-a1B2c3.tmp",
            ".embed-transplant-12-x-0badcafe-abc.tmp",
            ".embed-transplant-12-34-0badcafe-abc.json",
            ".embed-transplant-12-34-0badcafe-.tmp",
            ".embed-transplant-12-34-0badcafe-a/b.tmp",
            ".embed-transplant-12-34-abc.tmp",
            ".embed-transplant-12-34-badcafe-abc.tmp",
            "embed-transplant-12-34-0badcafe-abc.tmp",
        ] {
            assert_eq!(temp_owner(not_ours), None, "{not_ours}");
        }
        let dir = tempfile::tempdir().unwrap();
        // A pid that runs no more; and this pid with another start time: the pid reused.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale_file = format!("{TEMP_PREFIX}{dead}-5-{host}-abcdef.tmp");
        let reused = format!("{TEMP_PREFIX}{me}-{}-{host}-abcdef.tmp", start + 1);
        let stale_dir = format!("{TEMP_PREFIX}{dead}-5-{host}-ghijkl.old");
        let live = format!("{ours}mnopqr.tmp");
        let other = ".embed-transplant-legacy.tmp";
        // Another machine's or container's: its pid says nothing here.
        let elsewhere = format!(
            "{TEMP_PREFIX}{dead}-5-{}-stuvwx.tmp",
            if host == "00000000" {
                "00000001"
            } else {
                "00000000"
            }
        );
        for f in [&stale_file, &reused, &live, other, &elsewhere] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(&stale_dir)).unwrap();
        std::fs::write(dir.path().join(&stale_dir).join("model.safetensors"), b"x").unwrap();
        sweep_stale(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![live, other.to_string(), elsewhere];
        if start == 0 {
            // Without /proc the start time is unknown: the same pid counts as alive.
            want.push(reused);
        }
        want.sort();
        assert_eq!(left, want);
    }
}
