using ShardStream.Media;

namespace ShardStream.Rtmp;

/// <summary>
/// The NetConnection and NetStream commands (RTMP specification, section 7.2) of the two kinds of
/// client served: a publisher (ffmpeg, OBS: connect, releaseStream, FCPublish, createStream,
/// publish, @setDataFrame, FCUnpublish, deleteStream) and a player (connect, createStream, play).
/// Every answer echoes the transaction id of its command.
/// </summary>
internal sealed partial class RtmpSession
{
    private const uint DefaultStreamId = 1;
    private bool _connected;
    private bool _publishing;
    private uint _publishStreamId;
    private long _tags;

    /// <summary>
    /// Until when a connection that neither publishes nor plays is kept: the session start
    /// timeout from the handshake, and again from the end of each publish (a publisher's
    /// FCUnpublish comes long after the first deadline, and its close or next publish follows). A
    /// <see cref="System.Diagnostics.Stopwatch"/> timestamp, not the wall clock: a clock stepped
    /// back (NTP, a VM resumed) would give such a connection more than its 30 s, one stepped
    /// forward would close sessions still setting up.
    /// </summary>
    private long _startDeadline;

    /// <summary>Tags were written to the ingest since its last flush (at most one flush per read of the connection).</summary>
    private bool _tagsUnflushed;

    /// <summary>Every tag written since the last flush is audio.</summary>
    private bool _unflushedAudioOnly;

    /// <summary>When the first tag not yet flushed was written (<see cref="Environment.TickCount64"/>).</summary>
    private long _unflushedSince;

    /// <summary>When the last video tag was written; long.MinValue / 2 before the first.</summary>
    private long _lastVideoAt = long.MinValue / 2;
    private string _app = "";
    private Task? _playTask;

    private static List<object?> DecodeAmf(ReadOnlySpan<byte> data, int maxDepth) => new Amf0Reader(data, maxDepth).ReadAll();

    private async ValueTask HandleCommandAsync(RtmpMessage message, ReadOnlyMemory<byte> amf, CancellationToken ct)
    {
        var values = DecodeAmf(amf.Span, _limits.MaxAmfDepth);
        if (values.Count < 2 || values[0] is not string name || values[1] is not double transaction)
            throw new RtmpProtocolException("a command without a name and a transaction id");
        RtmpLog.Command(_log, Remote, name, transaction);
        if (!_connected && name != "connect") throw new RtmpProtocolException($"command '{Printable(name)}' before connect");
        switch (name)
        {
            case "connect":
                if (_connected) throw new RtmpProtocolException("a second connect");
                await ConnectAsync(transaction, values.Count > 2 ? values[2] as AmfObject : null, ct).ConfigureAwait(false);
                break;
            case "releaseStream" or "FCPublish":
                await ResultAsync(transaction, null, AmfUndefined.Value, ct).ConfigureAwait(false);
                break;
            case "createStream":
                await ResultAsync(transaction, null, (double)DefaultStreamId, ct).ConfigureAwait(false);
                break;
            case "publish":
                await PublishAsync(message.StreamId, values.Count > 3 ? values[3] as string : null, ct).ConfigureAwait(false);
                break;
            case "play":
                await PlayAsync(message.StreamId, values.Count > 3 ? values[3] as string : null, ct).ConfigureAwait(false);
                break;
            case "FCUnpublish":
                EndPublish("FCUnpublish");
                await ResultAsync(transaction, null, AmfUndefined.Value, ct).ConfigureAwait(false);
                break;
            case "deleteStream" or "closeStream":
                EndPublish(name);
                break;
            default:
                RtmpLog.Ignored(_log, Remote, $"command '{Printable(name)}'");
                break;
        }
    }

    private async ValueTask ConnectAsync(double transaction, AmfObject? command, CancellationToken ct)
    {
        _connected = true;
        // The key may have been typed into the server URL: log the application's first segment only.
        _app = Printable((command?.Get("app") as string ?? "").Split('/')[0]);
        await SendAsync(ControlChunkStream, RtmpMessageType.WindowAcknowledgementSize, 0, 0, RtmpControl.UInt32(OurWindow), ct).ConfigureAwait(false);
        await SendAsync(ControlChunkStream, RtmpMessageType.SetPeerBandwidth, 0, 0, RtmpControl.PeerBandwidth(OurWindow, 2), ct).ConfigureAwait(false);
        await SendChunkSizeAsync(ct).ConfigureAwait(false); // before any reply over 128 bytes
        var properties = new AmfObject { { "fmsVer", "FMS/3,0,1,123" }, { "capabilities", 31.0 }, { "mode", 1.0 } };
        if (command?.Get("fourCcList") is object?[] fourCcs) properties.Add("fourCcList", fourCcs); // Enhanced RTMP: what passes through
        var information = new AmfObject
        {
            { "level", "status" },
            { "code", "NetConnection.Connect.Success" },
            { "description", "Connection succeeded." },
            { "objectEncoding", 0.0 },
        };
        await ResultAsync(transaction, properties, information, ct).ConfigureAwait(false);
    }

    private async ValueTask PublishAsync(uint streamId, string? name, CancellationToken ct)
    {
        if (_publishing || _playTask is not null) throw new RtmpProtocolException("publish on a connection already publishing or playing");
        string? refusal = null, code = "NetStream.Publish.Denied";
        if (_server.Options.Ingest is null) refusal = "this node does not accept publishers";
        else if (name is null) refusal = "publish without a stream name";
        else if (!_server.KeyMatches(name))
        {
            refusal = "wrong stream key";
            code = "NetStream.Publish.BadName";
        }
        else if (!_server.TryClaimPublisher(this)) refusal = "another publisher is live";
        if (refusal is not null)
        {
            RtmpLog.PublishRefused(_log, Remote, refusal);
            await StatusAsync(streamId, "error", code, refusal, ct).ConfigureAwait(false);
            throw new RtmpRefusedException($"publish refused: {refusal}");
        }
        _publishing = true;
        _publishStreamId = streamId;
        _tags = 0;
        _server.Options.Ingest!.PublishStarted();
        await SendAsync(ControlChunkStream, RtmpMessageType.UserControl, 0, 0, RtmpControl.UserControl(UserControlEvent.StreamBegin, streamId), ct).ConfigureAwait(false);
        await StatusAsync(streamId, "status", "NetStream.Publish.Start", "Publishing started.", ct).ConfigureAwait(false);
        RtmpLog.PublishStarted(_log, Remote, _app);
    }

    private void EndPublish(string why)
    {
        if (!_publishing) return;
        _publishing = false;
        _startDeadline = StartDeadline();
        _server.Options.Ingest!.PublishEnded();
        _server.ReleasePublisher(this);
        RtmpLog.PublishEnded(_log, Remote, why, _tags);
    }

    private async ValueTask PlayAsync(uint streamId, string? name, CancellationToken ct)
    {
        if (_publishing || _playTask is not null) throw new RtmpProtocolException("play on a connection already publishing or playing");
        var feed = _server.Options.Play;
        string? refusal = feed is null ? "this node does not serve players"
            : name != _server.Options.PlayName ? $"unknown stream name (this node serves '{_server.Options.PlayName}')"
            : feed is FlvPlayHub { NotFlv: { } notFlv } ? $"this node's stream is not served over RTMP: {notFlv}"
            : null;
        if (refusal is not null)
        {
            RtmpLog.PlayRefused(_log, Remote, refusal);
            await StatusAsync(streamId, "error", "NetStream.Play.StreamNotFound", refusal, ct).ConfigureAwait(false);
            throw new RtmpRefusedException($"play refused: {refusal}");
        }
        await SendAsync(ControlChunkStream, RtmpMessageType.UserControl, 0, 0, RtmpControl.UserControl(UserControlEvent.StreamBegin, streamId), ct).ConfigureAwait(false);
        await StatusAsync(streamId, "status", "NetStream.Play.Reset", "Playing and resetting.", ct).ConfigureAwait(false);
        await StatusAsync(streamId, "status", "NetStream.Play.Start", "Started playing.", ct).ConfigureAwait(false);
        await SendAsync(DataChunkStream, RtmpMessageType.DataAmf0, streamId, 0, Amf0Writer.Encode("|RtmpSampleAccess", true, true), ct).ConfigureAwait(false);
        RtmpLog.PlayStarted(_log, Remote);
        _playTask = PumpAsync(feed!, streamId, _closing.Token);
    }

    /// <summary>Sends the feed to the player; a player that takes no message for the idle timeout is dropped.</summary>
    private async Task PumpAsync(IFlvTagFeed feed, uint streamId, CancellationToken ct)
    {
        await Task.Yield();
        try
        {
            await foreach (var tag in feed.SubscribeAsync(ct).ConfigureAwait(false))
            {
                int chunkStream = tag.Type switch { FlvTagType.Audio => AudioChunkStream, FlvTagType.Video => VideoChunkStream, _ => DataChunkStream };
                await SendAsync(chunkStream, (RtmpMessageType)tag.Type, streamId, tag.Timestamp, tag.Body, _limits.IdleTimeout, ct).ConfigureAwait(false);
            }
            await SendAsync(ControlChunkStream, RtmpMessageType.UserControl, 0, 0, RtmpControl.UserControl(UserControlEvent.StreamEof, streamId), ct).ConfigureAwait(false);
            await StatusAsync(streamId, "status", "NetStream.Play.Stop", "Stopped playing.", ct).ConfigureAwait(false);
            // The hub also ends its players when the stream turns out not to be FLV: not an end of the stream.
            Close(feed is FlvPlayHub { NotFlv: { } notFlv } ? $"the stream is not served over RTMP: {notFlv}" : "the stream ended");
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (RtmpProtocolException e)
        {
            Close(e.Message);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            Close($"connection lost: {e.Message}");
        }
    }

    private async ValueTask HandleMediaAsync(RtmpMessage message, CancellationToken ct)
    {
        if (!_publishing || message.StreamId != _publishStreamId)
        {
            RtmpLog.Ignored(_log, Remote, $"{message.Type} outside a publish");
            return;
        }
        switch (message.Type)
        {
            case RtmpMessageType.Audio or RtmpMessageType.Video:
                await WriteTagAsync((byte)message.Type, message.Timestamp, message.Payload, ct).ConfigureAwait(false);
                break;
            case RtmpMessageType.DataAmf0:
                await WriteDataAsync(message.Timestamp, message.Payload, ct).ConfigureAwait(false);
                break;
            case RtmpMessageType.Aggregate:
                await WriteAggregateAsync(message, ct).ConfigureAwait(false);
                break;
        }
    }

    private ValueTask WriteTagAsync(byte type, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken ct)
    {
        _tags++;
        long now = Environment.TickCount64;
        if (!_tagsUnflushed)
        {
            _tagsUnflushed = true;
            _unflushedAudioOnly = true;
            _unflushedSince = now;
        }
        if (type != (byte)FlvTagType.Audio) _unflushedAudioOnly = false;
        if (type == (byte)FlvTagType.Video) _lastVideoAt = now;
        return _server.Options.Ingest!.WriteTagAsync((FlvTagType)type, timestamp, body, ct);
    }

    /// <summary>
    /// Whether the tags not yet flushed stay with the ingest until a later read: they are all
    /// audio, video flows (a video tag within <see cref="RtmpLimits.VideoFlowWindow"/>), and the
    /// first of them came less than <see cref="RtmpLimits.MaxAudioHold"/> ago. A publisher
    /// interleaves its tags by time (ffmpeg and OBS: a video frame every 33 ms at 30 fps, an AAC
    /// frame every 21-23 ms), so the audio of one read goes on with the video frame of the next,
    /// and the coordinator cuts, hashes, signs and sends once per video frame instead of once per
    /// tag: about half the signatures at the source and half the verifications at every peer
    /// (docs/performance.md#rtmp-ingest-issue-11). Held audio goes on with the next read that has
    /// anything but audio, with the first read <see cref="RtmpLimits.MaxAudioHold"/> or more after
    /// it came, and when the connection ends. No timer is armed for it: a publisher that stops
    /// sending altogether, without closing, holds its last audio frames with it until it sends
    /// again or its idle timeout closes the connection.
    /// </summary>
    private bool HoldsAudio()
    {
        long now = Environment.TickCount64;
        return _unflushedAudioOnly && now - _lastVideoAt <= (long)_limits.VideoFlowWindow.TotalMilliseconds && now - _unflushedSince < (long)_limits.MaxAudioHold.TotalMilliseconds;
    }

    /// <summary>Hands the tags written since the last flush on to the ingest.</summary>
    private ValueTask FlushTagsAsync(CancellationToken ct)
    {
        _tagsUnflushed = false;
        return _server.Options.Ingest!.FlushAsync(ct);
    }

    /// <summary>A data message, checked as AMF0 (junk or deep nesting closes the connection), without "@setDataFrame".</summary>
    private ValueTask WriteDataAsync(uint timestamp, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        var values = DecodeAmf(payload.Span, _limits.MaxAmfDepth);
        if (values.Count == 0 || values[0] is not string name) throw new RtmpProtocolException("a data message that does not start with a name");
        if (name == "@setDataFrame")
        {
            int skip = 3 + System.Text.Encoding.UTF8.GetByteCount(name);
            payload = payload[skip..];
            if (values.Count < 2 || values[1] is not string) throw new RtmpProtocolException("@setDataFrame without a handler name");
        }
        else if (name == "@clearDataFrame") return ValueTask.CompletedTask;
        return WriteTagAsync(18, timestamp, payload, ct);
    }

    /// <summary>
    /// An aggregate message (section 7.1.6): FLV-like sub-messages (type, 24-bit size, 24+8-bit
    /// timestamp, stream id, body, back pointer), their timestamps shifted so that the first is the
    /// aggregate's own.
    /// </summary>
    private async ValueTask WriteAggregateAsync(RtmpMessage message, CancellationToken ct)
    {
        var data = message.Payload.AsMemory();
        uint? first = null;
        while (data.Length > 0)
        {
            if (data.Length < 11) throw new RtmpProtocolException("an aggregate message cut short");
            var h = data.Span;
            byte type = h[0];
            int size = h[1] << 16 | h[2] << 8 | h[3];
            uint timestamp = (uint)(h[7] << 24 | h[4] << 16 | h[5] << 8 | h[6]);
            if (data.Length < 11 + size + 4) throw new RtmpProtocolException("an aggregate sub-message cut short");
            first ??= timestamp;
            uint at = unchecked(message.Timestamp + (timestamp - first.Value));
            var body = data.Slice(11, size);
            if (type is 8 or 9) await WriteTagAsync(type, at, body, ct).ConfigureAwait(false);
            else if (type == 18) await WriteDataAsync(at, body, ct).ConfigureAwait(false);
            data = data[(11 + size + 4)..];
        }
    }

    private ValueTask ResultAsync(double transaction, object? a, object? b, CancellationToken ct) =>
        SendAsync(CommandChunkStream, RtmpMessageType.CommandAmf0, 0, 0, Amf0Writer.Encode("_result", transaction, a, b), ct);

    private ValueTask StatusAsync(uint streamId, string level, string code, string description, CancellationToken ct) =>
        SendAsync(DataChunkStream, RtmpMessageType.CommandAmf0, streamId, 0,
            Amf0Writer.Encode("onStatus", 0.0, null, new AmfObject { { "level", level }, { "code", code }, { "description", description } }), ct);

    /// <summary>A name from the wire made safe for one log line.</summary>
    private static string Printable(string s)
    {
        var cut = s.Length > 64 ? s[..64] + "…" : s;
        return string.Concat(cut.Select(c => char.IsControl(c) ? '?' : c));
    }
}
