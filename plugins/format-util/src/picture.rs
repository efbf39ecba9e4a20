//! The FLAC `PICTURE` block layout (big-endian), shared with Ogg's `METADATA_BLOCK_PICTURE`.

use musefs_plugin_api::{Picture, PluginResult};

use crate::Cursor;

/// Parses a FLAC picture structure.
///
/// # Errors
/// `INVALID_DATA` if a length points past the end.
pub fn parse_flac_picture(data: &[u8]) -> PluginResult<Picture> {
    let mut c = Cursor::new(data, "picture block");
    let picture_type = c.u32_be()?;
    let mime = c.string_be()?;
    let description = c.string_be()?;
    let width = c.u32_be()?;
    let height = c.u32_be()?;
    let depth = c.u32_be()?;
    let colors = c.u32_be()?;
    let len = c.u32_be()? as usize;
    let bytes = c.take(len)?;
    Ok(Picture {
        picture_type,
        mime: mime.into(),
        description: description.into(),
        width,
        height,
        depth,
        colors,
        data: bytes.to_vec().into(),
    })
}

/// Serialises a picture in the FLAC layout (the inverse of [`parse_flac_picture`]).
pub fn write_flac_picture(p: &Picture) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + p.mime.len() + p.description.len() + p.data.len());
    v.extend(p.picture_type.to_be_bytes());
    v.extend((p.mime.len() as u32).to_be_bytes());
    v.extend(p.mime.as_bytes());
    v.extend((p.description.len() as u32).to_be_bytes());
    v.extend(p.description.as_bytes());
    for n in [p.width, p.height, p.depth, p.colors, p.data.len() as u32] {
        v.extend(n.to_be_bytes());
    }
    v.extend(p.data.iter());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let p = Picture {
            picture_type: 3,
            mime: "image/png".into(),
            description: "front".into(),
            width: 2,
            height: 3,
            depth: 24,
            colors: 0,
            data: vec![1, 2, 3, 4].into(),
        };
        let bytes = write_flac_picture(&p);
        assert_eq!(parse_flac_picture(&bytes).unwrap(), p);
        for cut in 0..bytes.len() {
            assert!(parse_flac_picture(&bytes[..cut]).is_err());
        }
    }
}
