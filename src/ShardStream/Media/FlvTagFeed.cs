using System.Runtime.CompilerServices;

namespace ShardStream.Media;

/// <summary>
/// The tags of a <see cref="MediaHub"/>'s FLV stream, per viewer (for RTMP play): onMetaData and
/// the sequence headers, then a keyframe, then live, with the hub's bounded queue and skip-ahead.
/// A stream that is not FLV yields nothing.
/// </summary>
public sealed class FlvTagFeed(MediaHub hub) : IFlvTagFeed
{
    /// <inheritdoc />
    public async IAsyncEnumerable<FlvTag> SubscribeAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (await hub.Format.WaitAsync(cancellationToken).ConfigureAwait(false) != MediaFormat.Flv) yield break;
        using var viewer = hub.Subscribe();
        if (viewer is null) yield break;
        var buffer = new byte[64 * 1024];
        int length = 0;
        bool preambleDone = false;
        while (true)
        {
            var segments = await viewer.TakeAsync(cancellationToken).ConfigureAwait(false);
            if (segments.Count == 0) yield break;
            foreach (var s in segments)
            {
                if (length + s.Length > buffer.Length) Array.Resize(ref buffer, Math.Max(buffer.Length * 2, length + s.Length));
                s.CopyTo(buffer, length);
                length += s.Length;
            }
            int at = 0;
            if (!preambleDone)
            {
                if (!Flv.TryReadPreamble(buffer.AsSpan(0, length), out _, out int preamble)) continue;
                preambleDone = true;
                at = preamble;
            }
            while (Flv.TryReadTag(buffer.AsSpan(at, length - at), out var type, out uint timestamp, out int bodyLength, out int tagLength))
            {
                yield return new FlvTag(type, timestamp, buffer.AsMemory(at + FlvTag.HeaderLength, bodyLength));
                at += tagLength;
            }
            buffer.AsSpan(at, length - at).CopyTo(buffer);
            length -= at;
        }
    }
}
