using ShardStream.Media;

namespace ShardStream.Tests.Media;

/// <summary>Small synthetic FLV and MPEG-TS streams, byte by byte, for the scanner and reader tests.</summary>
internal static class MediaStreams
{
    public static readonly byte[] Metadata = Flv.TagBytes(FlvTagType.Script, 0, [0x02, 0x00, 0x0A, .. "onMetaData"u8, 0x08, 0, 0, 0, 0, 0, 0, 9]);
    public static readonly byte[] AvcHeader = Flv.TagBytes(FlvTagType.Video, 0, [0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1F]);
    public static readonly byte[] AacHeader = Flv.TagBytes(FlvTagType.Audio, 0, [0xAF, 0x00, 0x12, 0x10]);

    public static byte[] Preamble(byte flags = Flv.HasAudio | Flv.HasVideo)
    {
        var bytes = new byte[Flv.PreambleLength];
        Flv.WritePreamble(bytes, flags);
        return bytes;
    }

    public static byte[] Keyframe(uint ts, int size) => Flv.TagBytes(FlvTagType.Video, ts, [0x17, 0x01, 0, 0, 0, .. Filler(size)]);

    public static byte[] Inter(uint ts, int size) => Flv.TagBytes(FlvTagType.Video, ts, [0x27, 0x01, 0, 0, 0, .. Filler(size)]);

    public static byte[] Audio(uint ts) => Flv.TagBytes(FlvTagType.Audio, ts, [0xAF, 0x01, 1, 2, 3, 4]);

    private static byte[] Filler(int size) => Enumerable.Range(0, size).Select(i => (byte)i).ToArray();

    /// <summary>A TS packet of <paramref name="pid"/>: optionally with random_access_indicator, payload filled.</summary>
    public static byte[] TsPacket(int pid, bool randomAccess = false, bool unitStart = false, byte cc = 0)
    {
        var p = new byte[188];
        p[0] = 0x47;
        p[1] = (byte)((unitStart ? 0x40 : 0) | (pid >> 8));
        p[2] = (byte)pid;
        if (randomAccess)
        {
            p[3] = (byte)(0x30 | cc); // adaptation field and payload
            p[4] = 1;
            p[5] = 0x40;
        }
        else
        {
            p[3] = (byte)(0x10 | cc);
        }
        for (int i = randomAccess ? 6 : 4; i < 188; i++) p[i] = 0xAB;
        return p;
    }

    /// <summary>A PAT naming program 1 with its PMT at <paramref name="pmtPid"/> (CRC not checked by the scanner).</summary>
    public static byte[] Pat(int pmtPid, byte cc = 0) => Psi(0, cc, [0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, (byte)(0xE0 | (pmtPid >> 8)), (byte)pmtPid, 0, 0, 0, 0]);

    /// <summary>A PMT with H.264 video at <paramref name="videoPid"/> and AAC audio at <paramref name="audioPid"/>.</summary>
    public static byte[] Pmt(int pmtPid, int videoPid, int audioPid, byte cc = 0) => Psi(pmtPid, cc,
    [
        0x02, 0xB0, 0x17, 0x00, 0x01, 0xC1, 0x00, 0x00, (byte)(0xE0 | (videoPid >> 8)), (byte)videoPid, 0xF0, 0x00,
        0x1B, (byte)(0xE0 | (videoPid >> 8)), (byte)videoPid, 0xF0, 0x00,
        0x0F, (byte)(0xE0 | (audioPid >> 8)), (byte)audioPid, 0xF0, 0x00,
        0, 0, 0, 0,
    ]);

    private static byte[] Psi(int pid, byte cc, byte[] section)
    {
        var p = new byte[188];
        Array.Fill(p, (byte)0xFF);
        p[0] = 0x47;
        p[1] = (byte)(0x40 | (pid >> 8));
        p[2] = (byte)pid;
        p[3] = (byte)(0x10 | cc);
        p[4] = 0; // pointer field
        section.CopyTo(p, 5);
        return p;
    }
}
