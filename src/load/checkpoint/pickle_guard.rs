//! A budget check that runs over a pickle's bytes before candle's pickle machine builds any
//! object: every opcode must be one that machine knows, every length-prefixed argument must fit in
//! the bytes that are there, and the objects the pickle would build (counted, not built) must stay
//! small and shallow. Without it a few hostile bytes could make the machine allocate what a header
//! merely claims, clone a memoised object into an exponential tree, or nest so deep that dropping
//! it overflows the stack.

use std::collections::HashMap;

/// Most objects a pickle may build (real state dicts build tens of thousands).
const MAX_NODES: u64 = 20_000_000;
/// Most nodes copied through the memo in all (candle clones on every put and get); a real
/// 4.6 KB data.pkl copies about 1,700.
const MAX_MEMO_COPIES: u64 = 4_000_000;
/// Deepest nesting (state dicts nest about 6 deep).
const MAX_DEPTH: u32 = 256;

#[derive(Clone, Copy)]
struct Item {
    nodes: u64,
    depth: u32,
    mark: bool,
}

const LEAF: Item = Item {
    nodes: 1,
    depth: 1,
    mark: false,
};

/// A string counts by its length too: copying a long one through the memo costs its bytes.
fn sized(len: usize) -> Item {
    Item {
        nodes: 1 + len as u64 / 16,
        ..LEAF
    }
}

/// Checks the pickle that starts at `bytes[0]`; returns its length (through the STOP opcode).
pub fn check(bytes: &[u8]) -> Result<usize, String> {
    let mut pos = 0usize;
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Item> = HashMap::new();
    let mut copies = 0u64;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("an argument at byte {pos} runs past the end of the pickle"))?;
        let s = &bytes[*pos..end];
        *pos = end;
        Ok(s)
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64);
    loop {
        let at = pos;
        let op = *take(&mut pos, 1)?.first().unwrap_or(&0);
        let pop = |stack: &mut Vec<Item>| -> Result<Item, String> {
            match stack.pop() {
                Some(i) if !i.mark => Ok(i),
                _ => Err(format!("opcode at byte {at} needs a value the stack lacks")),
            }
        };
        let pop_mark = |stack: &mut Vec<Item>| -> Result<Item, String> {
            let m = stack
                .iter()
                .rposition(|i| i.mark)
                .ok_or_else(|| format!("opcode at byte {at} needs a mark"))?;
            let items = stack.split_off(m);
            Ok(items[1..].iter().fold(
                Item {
                    nodes: 0,
                    depth: 0,
                    mark: false,
                },
                |a, i| Item {
                    nodes: a.nodes.saturating_add(i.nodes),
                    depth: a.depth.max(i.depth),
                    mark: false,
                },
            ))
        };
        let wrap = |c: Item| Item {
            nodes: c.nodes.saturating_add(1),
            depth: c.depth + 1,
            mark: false,
        };
        let add = |top: &mut Item, c: Item| {
            top.nodes = top.nodes.saturating_add(c.nodes);
            top.depth = top.depth.max(c.depth + 1);
        };
        let mut pushed: Option<Item> = None;
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            }
            b'.' => return Ok(pos),
            b'c' => {
                let mut len = 0;
                for _ in 0..2 {
                    let rest = &bytes[pos..];
                    let nl = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .filter(|&n| n <= 256)
                        .ok_or_else(|| format!("GLOBAL at byte {at} has no short name line"))?;
                    pos += nl + 1;
                    len += nl;
                }
                pushed = Some(sized(len));
            }
            b'K' => {
                take(&mut pos, 1)?;
                pushed = Some(LEAF);
            }
            b'M' => {
                take(&mut pos, 2)?;
                pushed = Some(LEAF);
            }
            b'J' => {
                take(&mut pos, 4)?;
                pushed = Some(LEAF);
            }
            b'G' => {
                take(&mut pos, 8)?;
                pushed = Some(LEAF);
            }
            0x8a => {
                let n = take(&mut pos, 1)?[0] as usize;
                if n > 8 {
                    return Err(format!(
                        "LONG1 at byte {at} of {n} bytes does not fit in 64 bits"
                    ));
                }
                take(&mut pos, n)?;
                pushed = Some(LEAF);
            }
            b'X' => {
                let n = le(take(&mut pos, 4)?) as usize;
                take(&mut pos, n)?;
                pushed = Some(sized(n));
            }
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | b'd' => pushed = Some(LEAF),
            b'(' => stack.push(Item {
                nodes: 0,
                depth: 0,
                mark: true,
            }),
            b't' => {
                let c = pop_mark(&mut stack)?;
                pushed = Some(wrap(c));
            }
            0x85..=0x87 => {
                let mut c = Item {
                    nodes: 0,
                    depth: 0,
                    mark: false,
                };
                for _ in 0..(op - 0x84) {
                    let i = pop(&mut stack)?;
                    c.nodes = c.nodes.saturating_add(i.nodes);
                    c.depth = c.depth.max(i.depth);
                }
                pushed = Some(wrap(c));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                let top = stack
                    .last_mut()
                    .filter(|t| !t.mark)
                    .ok_or("APPEND without a list")?;
                add(top, v);
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                let top = stack
                    .last_mut()
                    .filter(|t| !t.mark)
                    .ok_or("SETITEM without a dict")?;
                add(top, v);
                add(top, k);
            }
            b'e' | b'u' => {
                let c = pop_mark(&mut stack)?;
                let top = stack
                    .last_mut()
                    .filter(|t| !t.mark)
                    .ok_or("APPENDS/SETITEMS without a container")?;
                add(top, c);
            }
            b'R' | b'b' | 0x81 => {
                let a = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                pushed = Some(wrap(Item {
                    nodes: a.nodes.saturating_add(f.nodes),
                    depth: a.depth.max(f.depth),
                    mark: false,
                }));
            }
            b'Q' => {
                let a = pop(&mut stack)?;
                pushed = Some(wrap(a));
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    take(&mut pos, 1)?[0] as u32
                } else {
                    le(take(&mut pos, 4)?) as u32
                };
                let top = *stack
                    .last()
                    .filter(|t| !t.mark)
                    .ok_or("PUT on an empty stack")?;
                copies = copies.saturating_add(top.nodes);
                memo.insert(id, top);
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    take(&mut pos, 1)?[0] as u32
                } else {
                    le(take(&mut pos, 4)?) as u32
                };
                let item = *memo
                    .get(&id)
                    .ok_or_else(|| format!("GET of memo {id} at byte {at}, never put"))?;
                copies = copies.saturating_add(item.nodes);
                pushed = Some(item);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at}"
                ))
            }
        }
        if let Some(i) = pushed {
            stack.push(i);
        }
        if let Some(t) = stack.last() {
            if t.nodes > MAX_NODES || t.depth > MAX_DEPTH {
                return Err(format!(
                    "the pickle builds too large or too deep a structure (at byte {at})"
                ));
            }
        }
        if copies > MAX_MEMO_COPIES {
            return Err(format!(
                "the pickle copies too much through its memo (at byte {at})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard knows exactly the opcodes candle's pickle machine knows: an upgrade of candle that
    /// adds or drops one fails here instead of drifting silently.
    #[test]
    fn guard_and_candle_agree_on_every_opcode() {
        for b in 0..=255u8 {
            let candle_knows = candle_core::pickle::OpCode::try_from(b).is_ok();
            let verdict = check(&[b, 0, 0, 0, 0, 0, 0, 0, 0]);
            let refused = format!("unsupported pickle opcode 0x{b:02x} at byte 0");
            let guard_refuses = verdict.as_ref().is_err_and(|e| *e == refused);
            assert_eq!(
                candle_knows, !guard_refuses,
                "opcode 0x{b:02x}: candle knows it: {candle_knows}; guard says {verdict:?}"
            );
        }
    }

    #[test]
    fn accepts_a_small_dict_and_measures_it() {
        // {'a': 1} protocol 2
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";
        assert_eq!(check(p), Ok(p.len()));
        let mut two = p.to_vec();
        two.extend_from_slice(b"extra");
        assert_eq!(check(&two), Ok(p.len()));
    }

    #[test]
    fn refuses_claimed_lengths_bombs_and_depth() {
        assert!(check(b"\x80\x02X\xff\xff\xff\xff")
            .unwrap_err()
            .contains("runs past the end"));
        assert!(check(b"\x80\x02\xff.")
            .unwrap_err()
            .contains("unsupported pickle opcode 0xff"));
        // A list doubled through the memo 40 times.
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        bomb.push(b'.');
        assert!(check(&bomb).unwrap_err().contains("too"));
        // 10,000 nested tuples.
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 10_000));
        deep.push(b'.');
        assert!(check(&deep).unwrap_err().contains("too large or too deep"));
        assert!(check(b"\x80\x02h\x05.").unwrap_err().contains("never put"));
    }
}
