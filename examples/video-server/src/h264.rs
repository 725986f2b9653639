//! Splits an H.264 Annex-B file into access units (frames) and types them
//! I/P/B from their slice headers (h264-reader).
use std::io::Read;

use anyhow::{bail, Context as _, Result};
use h264_reader::{
    annexb::AnnexBReader,
    nal::{
        pps::PicParameterSet,
        slice::{PicOrderCountLsb, SliceFamily, SliceHeader},
        sps::{PicOrderCntType, SeqParameterSet},
        Nal, RefNal, UnitType,
    },
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
    /// Other frames may predict from it (`nal_ref_idc` ≠ 0 on its slices).
    pub reference: bool,
    /// Position in presentation order, from 0: frames are stored in decode
    /// order, and with B-frames the two differ (picture order count).
    pub display_index: usize,
    /// The NAL units as Annex-B bytes (each with a 4-byte start code).
    pub annexb: Vec<u8>,
}

/// The stream's first sequence and picture parameter sets, as raw NAL units
/// (for an SDP's `sprop-parameter-sets`, RFC 6184 §8.1).
#[derive(Clone, Debug, Default)]
pub struct ParameterSets {
    /// The first SPS NAL unit.
    pub sps: Vec<u8>,
    /// The first PPS NAL unit.
    pub pps: Vec<u8>,
}

fn is_vcl(t: UnitType) -> bool {
    matches!(t, UnitType::SliceLayerWithoutPartitioningIdr | UnitType::SliceLayerWithoutPartitioningNonIdr)
}

/// Reads `path` and returns its frames in decode order. Errors if the file
/// cannot be read, holds no picture, or a slice refers to a missing SPS/PPS.
pub fn read_frames(path: &std::path::Path) -> Result<Vec<Frame>> {
    Ok(read_stream(path)?.0)
}

/// Like [`read_frames`], with the stream's first parameter sets.
pub fn read_stream(path: &std::path::Path) -> Result<(Vec<Frame>, ParameterSets)> {
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
    let mut cur_ref = false;
    let mut poc = PocState::default();
    let mut pocs: Vec<(bool, i64)> = Vec::new(); // per frame: IDR, picture order count
    let mut cur_poc = (false, 0i64);
    let mut sets = ParameterSets::default();
    for raw in &nals {
        let nal = RefNal::new(raw, &[], true);
        let Ok(header) = nal.header() else { continue };
        let t = header.nal_unit_type();
        let mut starts_new = false;
        match t {
            UnitType::SeqParameterSet => {
                if sets.sps.is_empty() {
                    sets.sps = raw.clone();
                }
                ctx.put_seq_param_set(SeqParameterSet::from_bits(nal.rbsp_bits()).map_err(|e| anyhow::anyhow!("SPS: {e:?}"))?);
                starts_new = cur_kind.is_some();
            }
            UnitType::PicParameterSet => {
                if sets.pps.is_empty() {
                    sets.pps = raw.clone();
                }
                ctx.put_pic_param_set(PicParameterSet::from_bits(&ctx, nal.rbsp_bits()).map_err(|e| anyhow::anyhow!("PPS: {e:?}"))?);
                starts_new = cur_kind.is_some();
            }
            UnitType::SEI | UnitType::AccessUnitDelimiter => starts_new = cur_kind.is_some(),
            t if is_vcl(t) => {
                let (sh, sps, _) = SliceHeader::from_bits(&ctx, &mut nal.rbsp_bits(), header).map_err(|e| anyhow::anyhow!("slice header: {e:?}"))?;
                let max_lsb = match sps.pic_order_cnt {
                    PicOrderCntType::TypeZero { log2_max_pic_order_cnt_lsb_minus4 } => Some(1i64 << (log2_max_pic_order_cnt_lsb_minus4 + 4)),
                    _ => None,
                };
                if sh.first_mb_in_slice == 0 && cur_kind.is_some() {
                    starts_new = true;
                }
                let kind = match sh.slice_type.family {
                    SliceFamily::I | SliceFamily::SI => FrameKind::I,
                    SliceFamily::P | SliceFamily::SP => FrameKind::P,
                    SliceFamily::B => FrameKind::B,
                };
                if starts_new {
                    push_frame(&mut frames, cur_kind.take().expect("set"), cur_ref, std::mem::take(&mut cur));
                    pocs.push(cur_poc);
                    starts_new = false;
                }
                if cur_kind.is_none() {
                    cur_ref = header.nal_ref_idc() != 0;
                    let idr = t == UnitType::SliceLayerWithoutPartitioningIdr;
                    let lsb = match sh.pic_order_cnt_lsb {
                        Some(PicOrderCountLsb::Frame(l)) => Some(l as i64),
                        Some(PicOrderCountLsb::FieldsAbsolute { pic_order_cnt_lsb, .. }) => Some(pic_order_cnt_lsb as i64),
                        _ => None,
                    };
                    // Without POC type 0 (x264's), presentation order is taken as decode order.
                    let order = match (max_lsb, lsb) {
                        (Some(max), Some(lsb)) => poc.next(idr, cur_ref, lsb, max),
                        _ => poc.count_only(idr),
                    };
                    cur_poc = (idr, order);
                }
                cur_kind.get_or_insert(kind);
            }
            _ => {}
        }
        if starts_new {
            push_frame(&mut frames, cur_kind.take().expect("set"), cur_ref, std::mem::take(&mut cur));
            pocs.push(cur_poc);
        }
        cur.extend_from_slice(&[0, 0, 0, 1]);
        cur.extend_from_slice(raw);
    }
    if let Some(k) = cur_kind {
        frames.push(Frame { index: frames.len(), kind: k, reference: cur_ref, display_index: 0, annexb: cur });
        pocs.push(cur_poc);
    }
    if frames.is_empty() {
        bail!("{} holds no H.264 picture", path.display());
    }
    for (f, d) in frames.iter_mut().zip(display_order(&pocs)) {
        f.display_index = d;
    }
    Ok((frames, sets))
}

/// Picture order count of frames, POC type 0 (H.264 §8.2.1.1): the MSB is
/// carried over from the previous reference picture and reset at an IDR.
#[derive(Default)]
struct PocState {
    prev_msb: i64,
    prev_lsb: i64,
    count: i64,
}

impl PocState {
    fn next(&mut self, idr: bool, reference: bool, lsb: i64, max_lsb: i64) -> i64 {
        if idr {
            (self.prev_msb, self.prev_lsb) = (0, 0);
        }
        let msb = if lsb < self.prev_lsb && self.prev_lsb - lsb >= max_lsb / 2 {
            self.prev_msb + max_lsb
        } else if lsb > self.prev_lsb && lsb - self.prev_lsb > max_lsb / 2 {
            self.prev_msb - max_lsb
        } else {
            self.prev_msb
        };
        if reference {
            (self.prev_msb, self.prev_lsb) = (msb, lsb);
        }
        msb + lsb
    }

    fn count_only(&mut self, idr: bool) -> i64 {
        if idr {
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// Presentation index of each frame from (IDR, picture order count) in
/// decode order: frames are ordered by POC within each IDR period.
fn display_order(pocs: &[(bool, i64)]) -> Vec<usize> {
    let mut out = vec![0; pocs.len()];
    let mut start = 0;
    while start < pocs.len() {
        let end = (start + 1..pocs.len()).find(|&i| pocs[i].0).unwrap_or(pocs.len());
        let mut idx: Vec<usize> = (start..end).collect();
        idx.sort_by_key(|&i| (pocs[i].1, i));
        for (rank, i) in idx.into_iter().enumerate() {
            out[i] = start + rank;
        }
        start = end;
    }
    out
}

/// Appends a frame in decode order (its display index is set once all are read).
fn push_frame(frames: &mut Vec<Frame>, kind: FrameKind, reference: bool, annexb: Vec<u8>) {
    frames.push(Frame { index: frames.len(), kind, reference, display_index: 0, annexb });
}
