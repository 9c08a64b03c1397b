"""Everything that runs ffmpeg: discovery, probing, decoding, encoding, round trips.

No other ratecontrol module starts ffmpeg; they call these functions.
"""
from ._decode import decode, decode_aligned, decode_aligned_blocks, decode_to_disk, resample_filter
from ._encode import WrittenFile, remux
from ._encoders import AVOption, check_preset_options, encoder_options, muxer_options
from ._ffmpeg import available_encoders, encoder_available, ffmpeg_path, ffmpeg_version, require_encoder
from ._inspect import MediaInfo, StreamInfo, audio_payload_bytes, default_audio_stream, inspect, is_lossless_codec
from ._layouts import layout_channels, lfe_indices, target_layout
from ._streamed import RoundTrip, StreamedEncode, encode_array, roundtrip, roundtrip_info
from ._streams import check_mux, extract_audio, mux_audio

__all__ = [
    "ffmpeg_path",
    "ffmpeg_version",
    "available_encoders",
    "encoder_available",
    "require_encoder",
    "AVOption",
    "encoder_options",
    "muxer_options",
    "check_preset_options",
    "MediaInfo",
    "inspect",
    "audio_payload_bytes",
    "decode",
    "decode_to_disk",
    "resample_filter",
    "encode_array",
    "remux",
    "mux_audio",
    "extract_audio",
    "check_mux",
    "StreamInfo",
    "default_audio_stream",
    "is_lossless_codec",
    "StreamedEncode",
    "roundtrip",
    "roundtrip_info",
    "decode_aligned",
    "decode_aligned_blocks",
    "RoundTrip",
    "WrittenFile",
    "layout_channels",
    "lfe_indices",
    "target_layout",
]
