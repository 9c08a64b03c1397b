"""Everything that runs ffmpeg: discovery, probing, decoding, encoding, round trips.

No other ratecontrol module starts ffmpeg; they call these functions.
"""
from ._decode import decode, decode_to_disk, resample_filter
from ._encode import (RoundTrip, WrittenFile, check_output_path, decode_aligned, decode_aligned_blocks, encode_array,
                      encode_file, mux_audio, remux, roundtrip, StreamedEncode, roundtrip_info)
from ._ffmpeg import available_encoders, encoder_available, ffmpeg_path, ffmpeg_version, require_encoder
from ._inspect import MediaInfo, audio_payload_bytes, inspect

__all__ = [
    "ffmpeg_path",
    "ffmpeg_version",
    "available_encoders",
    "encoder_available",
    "require_encoder",
    "MediaInfo",
    "inspect",
    "audio_payload_bytes",
    "decode",
    "decode_to_disk",
    "resample_filter",
    "encode_array",
    "encode_file",
    "remux",
    "mux_audio",
    "StreamedEncode",
    "roundtrip",
    "roundtrip_info",
    "decode_aligned",
    "decode_aligned_blocks",
    "check_output_path",
    "RoundTrip",
    "WrittenFile",
]
