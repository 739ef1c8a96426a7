using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Rtmp;

/// <summary>
/// One RTMP connection on the server side: the handshake, the chunk stream in both directions,
/// the protocol control messages (Set Chunk Size, Abort, Window Acknowledgement Size and the
/// acknowledgements it asks for, Set Peer Bandwidth, User Control ping), and the commands of a
/// publisher or a player (RtmpSession.Commands.cs). Any breach of the protocol or of a limit closes
/// the connection with a one-line reason.
/// </summary>
internal sealed partial class RtmpSession
{
    private const int ControlChunkStream = 2;
    private const int CommandChunkStream = 3;
    private const int AudioChunkStream = 4;
    private const int DataChunkStream = 5;
    private const int VideoChunkStream = 6;
    private const int OurChunkSize = 4096;
    private const uint OurWindow = 2_500_000;

    private readonly RtmpServer _server;
    private readonly IConnection _connection;
    private readonly RtmpLimits _limits;
    private readonly ILogger _log;
    private readonly ChunkReader _reader;
    private readonly ChunkWriter _writer = new();
    private readonly AckCounter _acks = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly CancellationTokenSource _closing = new();
    private PipeReader Input => _connection.Pipe.Input;
    private PipeWriter Output => _connection.Pipe.Output;

    public RtmpSession(RtmpServer server, IConnection connection)
    {
        _server = server;
        _connection = connection;
        _limits = server.Options.Limits;
        _log = server.Log;
        _reader = new ChunkReader(_limits);
        Remote = connection.RemoteAddress;
    }

    public string Remote { get; }

    /// <summary>Runs the connection to its end; logs why it ended; closes it whatever ended it.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            await RunToEndAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // Also after an exception none of RunToEndAsync's catches names (the server logs it
            // and counts the session closed): the socket, and on a reading thread the thread, go with it.
            // A graceful close sends what is still queued first; a player that stopped reading
            // (closed at the idle timeout, or when the server stops) never takes it, so the close
            // is given CloseGrace and then the connection is reset: else the session, its place
            // under the connection limits and the server's stop waited for that player for ever.
            var close = Task.Run(CloseConnectionAsync);
            if (await Task.WhenAny(close, Task.Delay(CloseGrace)).ConfigureAwait(false) != close) _connection.Abort();
            await close.ConfigureAwait(false);
            _closing.Dispose();
        }
    }

    /// <summary>How long a closing connection may take to send what is still queued for it; then it is reset.</summary>
    internal static readonly TimeSpan CloseGrace = TimeSpan.FromSeconds(3);

    private async Task CloseConnectionAsync()
    {
        try
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or ConnectionFailedException or System.Net.Sockets.SocketException)
        {
            _connection.Abort();
        }
    }

    private async Task RunToEndAsync(CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closing.Token);
        var ct = linked.Token;
        string reason;
        bool badInput = false;
        try
        {
            await HandshakeAsync(ct).ConfigureAwait(false);
            reason = await ReadLoopAsync(ct).ConfigureAwait(false);
        }
        catch (RtmpProtocolException e)
        {
            reason = e.Message;
            badInput = e is not RtmpRefusedException;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            reason = "server stopping";
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested)
        {
            reason = _closeReason ?? "closed";
        }
        catch (Exception e) when (e is IOException or ConnectionFailedException or ObjectDisposedException or InvalidOperationException)
        {
            reason = $"connection lost: {e.Message}";
        }
        finally
        {
            // Audio held for the next video frame goes on when the connection ends another way.
            if (_tagsUnflushed)
            {
                try
                {
                    await FlushTagsAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException)
                {
                    // The server is stopping, or the ingest is closed: nothing waits for these tags.
                }
            }
            EndPublish("connection closed");
            await _closing.CancelAsync().ConfigureAwait(false);
            if (_playTask is not null) await _playTask.ConfigureAwait(false);
        }
        if (badInput) _server.ClosedForBadInput(Remote, reason);
        else RtmpLog.Closed(_log, Remote, reason);
    }

    private string? _closeReason;

    /// <summary>Stops the session (from the play task) with a reason for the log.</summary>
    private void Close(string reason)
    {
        _closeReason ??= reason;
        _closing.Cancel();
    }

    private async Task HandshakeAsync(CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_limits.HandshakeTimeout);
        try
        {
            // C0 first: a client that is not RTMP is told so at its first byte, not at the timeout.
            var c0 = await ReadExactlyAsync(1, "C0", timeout.Token).ConfigureAwait(false);
            if (c0[0] != RtmpHandshake.Version) await SayNotRtmpAsync(timeout.Token).ConfigureAwait(false);
            RtmpHandshake.CheckVersion(c0[0]);
            var c1 = await ReadExactlyAsync(RtmpHandshake.PacketLength, "C1", timeout.Token).ConfigureAwait(false);
            var c0c1 = new byte[RtmpHandshake.ClientHelloLength];
            c0c1[0] = c0[0];
            c1.CopyTo(c0c1, 1);
            var response = RtmpHandshake.CreateServerResponse(c0c1, (uint)Environment.TickCount);
            await Output.WriteAsync(response, timeout.Token).ConfigureAwait(false);
            await ReadExactlyAsync(RtmpHandshake.PacketLength, "C2", timeout.Token).ConfigureAwait(false); // read, not compared
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new RtmpProtocolException($"handshake not finished within {_limits.HandshakeTimeout.TotalSeconds:0.#} s");
        }
    }

    /// <summary>
    /// Said to a client whose first byte is not RTMP's version before it is closed: a ShardStream
    /// peer given this port (not the node's -l) reads it as an answer that is not a frame and exits
    /// at once naming the --rtmp port, instead of taking the close for a loaded coordinator and
    /// retrying it for its rejoin time. One text line, so that curl or a log shows what answered.
    /// </summary>
    internal static ReadOnlySpan<byte> NotRtmpLine => NotRtmpBytes;

    /// <summary>
    /// <see cref="NotRtmpLine"/>: it begins as <see cref="NotShardStreamException.ServiceOf"/>
    /// recognises a node's RTMP server by.
    /// </summary>
    private static readonly byte[] NotRtmpBytes = System.Text.Encoding.ASCII.GetBytes($"{NotShardStreamException.RtmpServerPrefix} not an RTMP handshake\r\n");

    private async Task SayNotRtmpAsync(CancellationToken ct)
    {
        try
        {
            await Output.WriteAsync(NotRtmpBytes, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ConnectionFailedException or ObjectDisposedException or InvalidOperationException)
        {
            // Gone already: the close that follows says why.
        }
    }

    /// <summary>Reads exactly <paramref name="length"/> bytes; what follows in the same read stays in the pipe.</summary>
    private async Task<byte[]> ReadExactlyAsync(int length, string what, CancellationToken ct)
    {
        while (true)
        {
            var result = await Input.ReadAsync(ct).ConfigureAwait(false);
            var buffer = result.Buffer;
            if (buffer.Length >= length)
            {
                var bytes = buffer.Slice(0, length).ToArray();
                Input.AdvanceTo(buffer.GetPosition(length));
                _acks.Add(length, out _);
                return bytes;
            }
            if (result.IsCompleted) throw new RtmpProtocolException($"closed during the handshake, {buffer.Length} of the {length} bytes of {what} received");
            Input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private long StartDeadline() => Stopwatch.GetTimestamp() + (long)(_limits.SessionStartTimeout.TotalSeconds * Stopwatch.Frequency);

    private async Task<string> ReadLoopAsync(CancellationToken ct)
    {
        var messages = new List<RtmpMessage>();
        _startDeadline = StartDeadline();
        // One token for every read; CancelAfter moves its timer (no allocation per read).
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        while (true)
        {
            // Before a publish or play: the start deadline; publishing: the idle timeout; playing: none (a player sends little).
            TimeSpan wait = _publishing ? _limits.IdleTimeout : _playTask is null ? Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), _startDeadline) : Timeout.InfiniteTimeSpan;
            if (wait != Timeout.InfiniteTimeSpan && wait <= TimeSpan.Zero) throw new RtmpProtocolException($"no publish or play within {_limits.SessionStartTimeout.TotalSeconds:0.#} s");
            timeout.CancelAfter(wait);
            ReadResult result;
            try
            {
                result = await Input.ReadAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                throw new RtmpProtocolException(_publishing
                    ? $"publisher silent for {_limits.IdleTimeout.TotalSeconds:0.#} s"
                    : $"no publish or play within {_limits.SessionStartTimeout.TotalSeconds:0.#} s");
            }
            timeout.CancelAfter(Timeout.InfiniteTimeSpan); // our own wait (a full source) is not the publisher's silence

            var buffer = result.Buffer;
            long consumed = Parse(buffer, messages);
            Input.AdvanceTo(buffer.GetPosition(consumed), buffer.End);
            bool onlyAudio = true, handled = false;
            try
            {
                foreach (var message in messages)
                {
                    onlyAudio &= message.Type == RtmpMessageType.Audio;
                    await HandleAsync(message, ct).ConfigureAwait(false);
                }
                handled = true;
            }
            finally
            {
                messages.Clear();
                // The read's tags go on together, also those before a message that ends the
                // connection; a read of audio alone waits for the video frame that follows it (HoldsAudio).
                if (_tagsUnflushed && !(handled && onlyAudio && !result.IsCompleted && HoldsAudio()))
                    await FlushTagsAsync(ct).ConfigureAwait(false);
            }
            if (_acks.Add(consumed, out uint sequence))
                await SendAsync(ControlChunkStream, RtmpMessageType.Acknowledgement, 0, 0, RtmpControl.UInt32(sequence), ct).ConfigureAwait(false);
            if (result.IsCompleted)
            {
                if (buffer.Length > consumed || _reader.BufferedBytes > 0) throw new RtmpProtocolException("closed in the middle of a message");
                return _publishing ? "the publisher closed the connection" : "the client closed the connection";
            }
        }
    }

    /// <summary>
    /// Reads every whole message in <paramref name="buffer"/>; applies Set Chunk Size and Abort at
    /// once, since they change how the next chunk is read. Returns the bytes consumed.
    /// </summary>
    private long Parse(ReadOnlySequence<byte> buffer, List<RtmpMessage> messages)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (_reader.TryRead(ref reader, out var message))
        {
            if (message.Type == RtmpMessageType.SetChunkSize) _reader.SetChunkSize(RtmpControl.ReadUInt32(message));
            else if (message.Type == RtmpMessageType.Abort) _reader.Abort(RtmpControl.ReadUInt32(message));
            else messages.Add(message);
        }
        return reader.Consumed;
    }

    private async ValueTask HandleAsync(RtmpMessage message, CancellationToken ct)
    {
        switch (message.Type)
        {
            case RtmpMessageType.WindowAcknowledgementSize:
                _acks.Window = RtmpControl.ReadUInt32(message);
                break;
            case RtmpMessageType.Acknowledgement or RtmpMessageType.SetPeerBandwidth:
                break;
            case RtmpMessageType.UserControl:
                if (message.Payload.Length >= 6 && (UserControlEvent)(message.Payload[0] << 8 | message.Payload[1]) == UserControlEvent.PingRequest)
                {
                    var pong = (byte[])message.Payload.Clone();
                    pong[0] = 0;
                    pong[1] = (byte)UserControlEvent.PingResponse;
                    await SendAsync(ControlChunkStream, RtmpMessageType.UserControl, 0, 0, pong.AsMemory(0, 6), ct).ConfigureAwait(false);
                }
                break;
            case RtmpMessageType.CommandAmf0:
                await HandleCommandAsync(message, message.Payload, ct).ConfigureAwait(false);
                break;
            case RtmpMessageType.CommandAmf3 when message.Payload.Length > 0:
                await HandleCommandAsync(message, message.Payload.AsMemory(1), ct).ConfigureAwait(false); // a leading 0: AMF0 values follow
                break;
            case RtmpMessageType.Audio or RtmpMessageType.Video or RtmpMessageType.DataAmf0 or RtmpMessageType.Aggregate:
                await HandleMediaAsync(message, ct).ConfigureAwait(false);
                break;
            default:
                RtmpLog.Ignored(_log, Remote, message.ToString());
                break;
        }
    }

    private ValueTask SendAsync(int chunkStream, RtmpMessageType type, uint streamId, uint timestamp, ReadOnlyMemory<byte> payload, CancellationToken ct) =>
        SendAsync(chunkStream, type, streamId, timestamp, payload, null, ct);

    private async ValueTask SendAsync(int chunkStream, RtmpMessageType type, uint streamId, uint timestamp, ReadOnlyMemory<byte> payload, TimeSpan? timeout, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            _writer.Write(Output, chunkStream, timestamp, type, streamId, payload.Span);
            if (type == RtmpMessageType.SetChunkSize) _writer.SetChunkSize((int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(payload.Span));
            if (timeout is null)
            {
                await Output.FlushAsync(ct).ConfigureAwait(false);
                return;
            }
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout.Value);
            try
            {
                await Output.FlushAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cts.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                throw new RtmpProtocolException($"the player took more than {timeout.Value.TotalSeconds:0.#} s to take a message");
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Set Chunk Size to ours, then every later message is cut at it.</summary>
    private ValueTask SendChunkSizeAsync(CancellationToken ct) =>
        SendAsync(ControlChunkStream, RtmpMessageType.SetChunkSize, 0, 0, RtmpControl.UInt32(OurChunkSize), ct);
}
