//! Kernel struct offsets for the dequeue probe, read from the running
//! kernel's BTF so the probe works on any kernel layout without CO-RE.
use anyhow::{anyhow, Context, Result};
use btf_rs::{Btf, Struct, Type};
use qsock_common::KernelOffsets;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Byte offset of `path` (member names, through anonymous unions and
/// structs) inside struct `root`.
fn offset_of(btf: &Btf, root: &str, path: &[&str]) -> Result<u32> {
    let ty = btf
        .resolve_types_by_name(root)
        .with_context(|| format!("struct {root} not in BTF"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("{root} is not a struct"))?;
    let mut st = ty;
    let mut bits = 0u32;
    for (i, name) in path.iter().enumerate() {
        let (off, next) = find_member(btf, &st, name).ok_or_else(|| anyhow!("{root}.{} not found", path[..=i].join(".")))?;
        bits += off;
        if i + 1 < path.len() {
            st = match next {
                Type::Struct(s) | Type::Union(s) => s,
                other => return Err(anyhow!("{name} is a {}, not a struct", other.name())),
            };
        }
    }
    if !bits.is_multiple_of(8) {
        return Err(anyhow!("{root}.{} is a bitfield", path.join(".")));
    }
    Ok(bits / 8)
}

/// Finds `name` among `st`'s members, descending into anonymous members.
/// Returns its bit offset and type.
fn find_member(btf: &Btf, st: &Struct, name: &str) -> Option<(u32, Type)> {
    for m in &st.members {
        let n = btf.resolve_name(m).unwrap_or_default();
        if n == name {
            return Some((m.bit_offset(), resolve_typedefs(btf, btf.resolve_chained_type(m).ok()?)));
        }
        if n.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = resolve_typedefs(btf, btf.resolve_chained_type(m).ok()?) {
                if let Some((off, t)) = find_member(btf, &inner, name) {
                    return Some((m.bit_offset() + off, t));
                }
            }
        }
    }
    None
}

fn resolve_typedefs(btf: &Btf, mut t: Type) -> Type {
    while let Type::Typedef(_) | Type::Volatile(_) | Type::Const(_) = t {
        let Some(bt) = t.as_btf_type() else { break };
        match btf.resolve_chained_type(bt) {
            Ok(n) => t = n,
            Err(_) => break,
        }
    }
    t
}

/// Reads the offsets the dequeue probe needs from [`VMLINUX_BTF`].
/// Errors when the kernel has no BTF or a member moved out of reach.
pub fn kernel_offsets() -> Result<KernelOffsets> {
    let btf = Btf::from_file(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF} (kernel built without BTF?)"))?;
    Ok(KernelOffsets {
        skb_sk: offset_of(&btf, "sk_buff", &["sk"])?,
        skb_tstamp: offset_of(&btf, "sk_buff", &["tstamp"])?,
        sk_cookie: offset_of(&btf, "sock", &["__sk_common", "skc_cookie"])?,
        skb_len: offset_of(&btf, "sk_buff", &["len"])?,
        skb_next: offset_of(&btf, "sk_buff", &["next"])?,
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_resolve_on_this_kernel() {
        if !std::path::Path::new(super::VMLINUX_BTF).exists() {
            eprintln!("SKIP: kernel has no BTF");
            return;
        }
        let o = super::kernel_offsets().unwrap();
        // sk_buff starts with next/prev/dev-or-rbnode, so these are past 16 bytes.
        assert!(o.skb_sk >= 16 && o.skb_tstamp >= 16 && o.skb_len > o.skb_tstamp);
        assert!(o.sk_cookie > 0);
    }
}
