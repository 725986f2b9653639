//! Splits an H.264 Annex-B file into access units (frames) and types them
//! I/P/B from their slice headers (h264-reader).
use std::io::Read;

use anyhow::{bail, Context as _, Result};
use h264_reader::{
    annexb::AnnexBReader,
    nal::{pps::PicParameterSet, slice::SliceFamily, slice::SliceHeader, sps::SeqParameterSet, Nal, RefNal, UnitType},
    push::NalInterest,
    Context,
};
use serde::{Deserialize, Serialize};

/// Frame type, from the first slice's `slice_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FrameKind {
    /// Intra frame (I/SI slices); IDR or not.
    I,
    /// Predicted frame.
    P,
    /// Bi-predicted frame.
    B,
}

/// One access unit: every NAL of one picture in decode order, with the
/// parameter sets and SEI that precede it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Decode-order index, from 0.
    pub index: usize,
    /// Frame type.
    pub kind: FrameKind,
    /// The NAL units as Annex-B bytes (each with a 4-byte start code).
    pub annexb: Vec<u8>,
}

fn is_vcl(t: UnitType) -> bool {
    matches!(t, UnitType::SliceLayerWithoutPartitioningIdr | UnitType::SliceLayerWithoutPartitioningNonIdr)
}

/// Reads `path` and returns its frames in decode order. Errors if the file
/// cannot be read, holds no picture, or a slice refers to a missing SPS/PPS.
pub fn read_frames(path: &std::path::Path) -> Result<Vec<Frame>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?.read_to_end(&mut bytes)?;
    let mut nals: Vec<Vec<u8>> = Vec::new();
    {
        let mut reader = AnnexBReader::accumulate(|nal: RefNal<'_>| {
            if nal.is_complete() {
                let mut v = Vec::new();
                if nal.reader().read_to_end(&mut v).is_ok() && !v.is_empty() {
                    nals.push(v);
                }
            }
            NalInterest::Buffer
        });
        reader.push(&bytes);
        reader.reset();
    }
    let mut ctx = Context::new();
    let mut frames = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_kind: Option<FrameKind> = None;
    for raw in &nals {
        let nal = RefNal::new(raw, &[], true);
        let Ok(header) = nal.header() else { continue };
        let t = header.nal_unit_type();
        let mut starts_new = false;
        match t {
            UnitType::SeqParameterSet => {
                ctx.put_seq_param_set(SeqParameterSet::from_bits(nal.rbsp_bits()).map_err(|e| anyhow::anyhow!("SPS: {e:?}"))?);
                starts_new = cur_kind.is_some();
            }
            UnitType::PicParameterSet => {
                ctx.put_pic_param_set(PicParameterSet::from_bits(&ctx, nal.rbsp_bits()).map_err(|e| anyhow::anyhow!("PPS: {e:?}"))?);
                starts_new = cur_kind.is_some();
            }
            UnitType::SEI | UnitType::AccessUnitDelimiter => starts_new = cur_kind.is_some(),
            t if is_vcl(t) => {
                let (sh, _, _) = SliceHeader::from_bits(&ctx, &mut nal.rbsp_bits(), header).map_err(|e| anyhow::anyhow!("slice header: {e:?}"))?;
                if sh.first_mb_in_slice == 0 && cur_kind.is_some() {
                    starts_new = true;
                }
                let kind = match sh.slice_type.family {
                    SliceFamily::I | SliceFamily::SI => FrameKind::I,
                    SliceFamily::P | SliceFamily::SP => FrameKind::P,
                    SliceFamily::B => FrameKind::B,
                };
                if starts_new {
                    frames.push(Frame { index: frames.len(), kind: cur_kind.take().expect("set"), annexb: std::mem::take(&mut cur) });
                    starts_new = false;
                }
                cur_kind.get_or_insert(kind);
            }
            _ => {}
        }
        if starts_new {
            frames.push(Frame { index: frames.len(), kind: cur_kind.take().expect("set"), annexb: std::mem::take(&mut cur) });
        }
        cur.extend_from_slice(&[0, 0, 0, 1]);
        cur.extend_from_slice(raw);
    }
    if let Some(k) = cur_kind {
        frames.push(Frame { index: frames.len(), kind: k, annexb: cur });
    }
    if frames.is_empty() {
        bail!("{} holds no H.264 picture", path.display());
    }
    Ok(frames)
}
