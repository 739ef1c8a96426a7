using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger's control link, for tests of what the coordinator measures and believes of a peer:
/// it joins with a coordinate of its choosing, heartbeats it every 200 ms, and answers every ping
/// with the hold it claims (a real peer answers at once and says how long its pong waited).
/// </summary>
internal sealed class StrangerControlLink : IAsyncDisposable
{
    private readonly IConnection _connection;
    private readonly TimeSpan _claimedHold;
    private readonly TimeSpan _answerDelay;
    private readonly WireCoordinate _coordinate;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _writing = new(1, 1);
    private Task _answering = Task.CompletedTask;
    private Task _beating = Task.CompletedTask;
    private int _pongs;

    private StrangerControlLink(IConnection connection, int id, TimeSpan claimedHold, WireCoordinate coordinate, TimeSpan answerDelay)
    {
        _connection = connection;
        Id = id;
        _claimedHold = claimedHold;
        _answerDelay = answerDelay;
        _coordinate = coordinate;
    }

    /// <summary>The peer id its Welcome gave it.</summary>
    public int Id { get; }

    /// <summary>Pongs sent so far.</summary>
    public int Pongs => Volatile.Read(ref _pongs);

    /// <summary>
    /// Joins <paramref name="overlay"/> from host "liar" with <paramref name="coordinate"/>
    /// (default: (1, 1), height 1, error 0.5); a latency-aware coordinator's Landmarks are
    /// answered with the same Join, as if nothing was measured (or, with <paramref name="measured"/>,
    /// as if those RTTs were). With <paramref name="answerDelay"/>, each ping is answered that much
    /// later than it arrived, with the hold claimed as before: a process that stalls and does not know it.
    /// From <paramref name="host"/> instead, and, with <paramref name="uploadPercent"/>, claiming that
    /// upload: it answers the coordinator's probe at "HOST:1" (its join token is 0), so that it is
    /// placed as a relay (children are sent to it, and never connect: nothing listens there after).
    /// With <paramref name="token"/>, its Join carries that join token (one it learned), else 0;
    /// with <paramref name="resume"/>, resume points too, as a peer joining again does.
    /// </summary>
    public static async Task<StrangerControlLink> JoinAsync(Overlay overlay, TimeSpan claimedHold, WireCoordinate? coordinate = null, MeasuredRtt[]? measured = null, TimeSpan answerDelay = default,
        string host = "liar", ushort uploadPercent = 0, ulong token = 0, ShardStart[]? resume = null)
    {
        var claimed = coordinate ?? new WireCoordinate(1, 1, 1, 0.5f);
        await using var listener = uploadPercent > 0 ? await overlay.Network.Host(host).ListenAsync($"{host}:1", CancellationToken.None) : null;
        var probe = listener is null ? Task.CompletedTask : ProbeAnswer.AnswerAsync(listener, 0);
        var connection = await overlay.Network.Host(host).ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        var join = new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, uploadPercent, resume ?? [], $"{host}:1", new byte[Protocol.NonceLength], null, claimed, measured);
        for (int round = 0; ; round++)
        {
            join.Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
            if (type == FrameType.Landmarks && round < Protocol.MaxLandmarkRounds) continue;
            Assert.Equal(FrameType.Welcome, type);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            Assert.True(Welcome.TryRead(ref reader, out var welcome));
            await probe;
            var liar = new StrangerControlLink(connection, (int)welcome.PeerId, claimedHold, claimed, answerDelay);
            liar._answering = liar.AnswerAsync();
            liar._beating = liar.BeatAsync();
            return liar;
        }
    }

    /// <summary>Sends what <paramref name="write"/> writes, between its heartbeats and pongs.</summary>
    public Task SendAsync(Action<PipeWriter> write) => WriteAsync(write);

    private async Task WriteAsync(Action<PipeWriter> write)
    {
        await _writing.WaitAsync(_stop.Token);
        try
        {
            write(_connection.Pipe.Output);
            await _connection.Pipe.Output.FlushAsync(_stop.Token);
        }
        finally
        {
            _writing.Release();
        }
    }

    private async Task AnswerAsync()
    {
        try
        {
            while (true)
            {
                var (type, body) = await RawFrames.ReadAsync(_connection.Pipe.Input).WaitAsync(_stop.Token);
                var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
                if (type != FrameType.Ping || !Ping.TryRead(ref reader, out var ping)) continue;
                if (_answerDelay > TimeSpan.Zero) await Task.Delay(_answerDelay, _stop.Token);
                await WriteAsync(o => new Pong(ping.Token, (uint)_claimedHold.TotalMicroseconds, _coordinate).Write(o));
                Interlocked.Increment(ref _pongs);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // Stopped, or the coordinator closed the link (the test says what it measured by then).
        }
    }

    private async Task BeatAsync()
    {
        try
        {
            while (true)
            {
                await WriteAsync(o => new Heartbeat(0, _coordinate).Write(o));
                await Task.Delay(200, _stop.Token);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
        catch (IOException)
        {
            // The coordinator closed the link (a peer took back the place this stranger joined in).
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_answering, _beating);
        _connection.Abort();
    }
}
