using System.Buffers.Binary;

namespace ShardStream.Media;

/// <summary>
/// Units of an MPEG-TS stream (ISO/IEC 13818-1): 188-byte packets. The PAT (PID 0) names the PMT's
/// PID; the PMT names the elementary streams. A packet of the video stream whose adaptation field
/// has random_access_indicator set starts a decodable picture (of the audio stream, when there is
/// no video); the latest PAT and PMT packets make the header. Bytes between packets (lost sync)
/// pass as units of their own up to the next sync byte.
/// </summary>
internal sealed class TsScanner : UnitScanner
{
    private const int PacketLength = MediaFormats.TsPacketLength;
    private const byte Sync = 0x47;
    private byte[]? _pat;
    private byte[]? _pmt;
    private int _pmtPid = -1;
    private int _videoPid = -1;
    private int _audioPid = -1;
    private uint _generation;

    public override MediaFormat Format => MediaFormat.MpegTs;

    public override int Next(ReadOnlySpan<byte> data, out bool randomAccess)
    {
        randomAccess = false;
        if (data.IsEmpty) return 0;
        if (data[0] != Sync)
        {
            int next = data[1..].IndexOf(Sync);
            LostSync = "bytes between MPEG-TS packets (no sync byte 0x47 where a packet should start); passed through up to the next sync byte";
            return next < 0 ? data.Length : next + 1;
        }
        if (data.Length < PacketLength) return 0;
        var packet = data[..PacketLength];
        int pid = ((packet[1] & 0x1F) << 8) | packet[2];
        bool unitStart = (packet[1] & 0x40) != 0;
        int adaptation = (packet[3] >> 4) & 0x03;
        int payloadAt = 4;
        if (adaptation is 2 or 3)
        {
            int afLength = packet[4];
            if (afLength > 0 && (packet[5] & 0x40) != 0)
                randomAccess = pid == _videoPid || (_videoPid < 0 && pid == _audioPid);
            payloadAt = 5 + afLength;
        }
        if (unitStart && adaptation is 1 or 3 && payloadAt < PacketLength)
        {
            if (pid == 0) OnPat(packet, payloadAt);
            else if (pid == _pmtPid) OnPmt(packet, payloadAt);
        }
        return PacketLength;
    }

    /// <summary>The section of a PSI packet that starts in it: after the pointer field.</summary>
    private static ReadOnlySpan<byte> Section(ReadOnlySpan<byte> packet, int payloadAt)
    {
        int at = payloadAt + 1 + packet[payloadAt];
        if (at + 3 > PacketLength) return [];
        int sectionLength = ((packet[at + 1] & 0x0F) << 8) | packet[at + 2];
        // A section that goes on in the next packet is not used (PAT and PMT of a live stream fit in one).
        return at + 3 + sectionLength > PacketLength ? [] : packet.Slice(at, 3 + sectionLength);
    }

    private void OnPat(ReadOnlySpan<byte> packet, int payloadAt)
    {
        var s = Section(packet, payloadAt);
        if (s.Length < 12 || s[0] != 0x00) return;
        // Program loop: after the 8-byte section header, before the 4-byte CRC.
        for (int i = 8; i + 4 <= s.Length - 4; i += 4)
        {
            int program = BinaryPrimitives.ReadUInt16BigEndian(s[i..]);
            if (program == 0) continue; // the network PID
            _pmtPid = ((s[i + 2] & 0x1F) << 8) | s[i + 3];
            break;
        }
        Keep(ref _pat, packet);
    }

    private void OnPmt(ReadOnlySpan<byte> packet, int payloadAt)
    {
        var s = Section(packet, payloadAt);
        if (s.Length < 16 || s[0] != 0x02) return;
        int programInfo = ((s[10] & 0x0F) << 8) | s[11];
        int video = -1, audio = -1;
        for (int i = 12 + programInfo; i + 5 <= s.Length - 4;)
        {
            byte streamType = s[i];
            int pid = ((s[i + 1] & 0x1F) << 8) | s[i + 2];
            int esInfo = ((s[i + 3] & 0x0F) << 8) | s[i + 4];
            if (video < 0 && IsVideo(streamType)) video = pid;
            else if (audio < 0 && IsAudio(streamType)) audio = pid;
            i += 5 + esInfo;
        }
        _videoPid = video;
        _audioPid = audio;
        Keep(ref _pmt, packet);
    }

    /// <summary>MPEG-1/2 video, MPEG-4 part 2, H.264, HEVC, VVC (ISO/IEC 13818-1 table 2-34).</summary>
    private static bool IsVideo(byte streamType) => streamType is 0x01 or 0x02 or 0x10 or 0x1B or 0x24 or 0x33;

    /// <summary>MPEG-1/2 audio, AAC (ADTS and LATM), AC-3 and E-AC-3 as ATSC registers them.</summary>
    private static bool IsAudio(byte streamType) => streamType is 0x03 or 0x04 or 0x0F or 0x11 or 0x81 or 0x87;

    private void Keep(ref byte[]? slot, ReadOnlySpan<byte> packet)
    {
        // The same table again, only its continuity counter changed: the same header.
        bool same = slot is not null && slot.AsSpan(0, 3).SequenceEqual(packet[..3]) && (slot[3] & 0xF0) == (packet[3] & 0xF0)
            && slot.AsSpan(4).SequenceEqual(packet[4..]);
        if (same) return;
        slot = packet.ToArray();
        if (_pat is null || _pmt is null) return;
        Header = new MediaHeader(MediaFormat.MpegTs, ++_generation, [.. _pat, .. _pmt]);
    }
}
