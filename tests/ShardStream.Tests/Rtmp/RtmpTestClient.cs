using System.Buffers;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using ShardStream.Media;
using ShardStream.Rtmp;
using ShardStream.Transport;

namespace ShardStream.Tests.Rtmp;

/// <summary>A minimal RTMP client built from the codecs under test, speaking over real TCP.</summary>
internal sealed class RtmpTestClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly ChunkReader _reader = new(new RtmpLimits());
    private readonly ChunkWriter _writer = new();
    private readonly List<byte> _pending = [];
    private readonly byte[] _buffer = new byte[65536];

    private RtmpTestClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<RtmpTestClient> ConnectAsync(string address)
    {
        var endpoint = await Endpoint.ResolveAsync(address, CancellationToken.None);
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endpoint);
        return new RtmpTestClient(socket);
    }

    /// <summary>A player as ffmpeg starts one: connect, createStream, then play of <paramref name="name"/> (its answer left unread).</summary>
    public static async Task<RtmpTestClient> PlayAsync(string address, string name = "stream")
    {
        var client = await ConnectAsync(address);
        await client.HandshakeAsync(afterC2: Encode(3, RtmpMessageType.CommandAmf0, 0, 0,
            Amf0Writer.Encode("connect", 1.0, new AmfObject { { "app", "live" }, { "tcUrl", "rtmp://127.0.0.1/live" } })));
        Assert.Equal(["_result", 1.0], (await client.ReadCommandAsync())![..2]);
        await client.CommandAsync(0, "createStream", 2.0, null);
        Assert.Equal(["_result", 2.0, null, 1.0], await client.ReadCommandAsync());
        await client.CommandAsync(1, "play", 3.0, null, name);
        return client;
    }

    /// <summary>The handshake; <paramref name="afterC2"/> goes out in the same write as C2.</summary>
    public async Task HandshakeAsync(byte[]? afterC2 = null)
    {
        await _stream.WriteAsync(RtmpHandshake.CreateClientHello(0));
        var s = new byte[1 + 2 * RtmpHandshake.PacketLength];
        await _stream.ReadExactlyAsync(s).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        S0S1S2 = s;
        await _stream.WriteAsync((byte[])[.. s.AsSpan(1, RtmpHandshake.PacketLength), .. afterC2 ?? []]);
    }

    public byte[] S0S1S2 { get; private set; } = [];

    public static byte[] Encode(int csid, RtmpMessageType type, uint msid, uint ts, byte[] payload, int chunkSize = 128)
    {
        var writer = new ChunkWriter();
        writer.SetChunkSize(chunkSize);
        var output = new ArrayBufferWriter<byte>();
        writer.Write(output, csid, ts, type, msid, payload);
        return output.WrittenSpan.ToArray();
    }

    public async Task SendAsync(int csid, RtmpMessageType type, uint msid, uint ts, byte[] payload)
    {
        var output = new ArrayBufferWriter<byte>();
        _writer.Write(output, csid, ts, type, msid, payload);
        await _stream.WriteAsync(output.WrittenMemory);
    }

    public Task SendRawAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();

    public Task CommandAsync(uint msid, params object?[] values) => SendAsync(3, RtmpMessageType.CommandAmf0, msid, 0, Amf0Writer.Encode(values));

    /// <summary>The next message; null when the server closed the connection.</summary>
    public async Task<RtmpMessage?> ReadAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            var buffer = new ReadOnlySequence<byte>(_pending.ToArray());
            var r = new SequenceReader<byte>(buffer);
            bool found = _reader.TryRead(ref r, out var m);
            _pending.RemoveRange(0, (int)r.Consumed);
            if (found)
            {
                if (m!.Type == RtmpMessageType.SetChunkSize) _reader.SetChunkSize(RtmpControl.ReadUInt32(m));
                return m;
            }
            int n;
            try
            {
                n = await _stream.ReadAsync(_buffer, cts.Token);
            }
            catch (IOException)
            {
                return null;
            }
            if (n == 0) return null;
            _pending.AddRange(_buffer.AsSpan(0, n).ToArray());
        }
    }

    /// <summary>Reads until an AMF0 command arrives (control messages before it go to <paramref name="skipped"/>); null on close.</summary>
    public async Task<List<object?>?> ReadCommandAsync(List<RtmpMessage>? skipped = null)
    {
        while (await ReadAsync() is { } m)
        {
            if (m.Type == RtmpMessageType.CommandAmf0) return new Amf0Reader(m.Payload, 16).ReadAll();
            skipped?.Add(m);
        }
        return null;
    }

    /// <summary>
    /// True once the server has closed the connection (reads end). What came before the close is
    /// not read as chunks: to a client that is not RTMP the server answers with a text line
    /// (<see cref="RtmpSession.NotRtmpLine"/>), which <see cref="ReadToCloseAsync"/> reads.
    /// </summary>
    public async Task<bool> ClosedAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            while (await _stream.ReadAsync(_buffer, cts.Token) > 0) { }
        }
        catch (IOException)
        {
            // Reset: closed as well.
        }
        return true;
    }

    /// <summary>What the server sent before it closed, as bytes (not chunks): its answer to a client that is not RTMP.</summary>
    public async Task<byte[]> ReadToCloseAsync()
    {
        var all = new MemoryStream();
        await _stream.CopyToAsync(all);
        return all.ToArray();
    }

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}

/// <summary>Records what a publish delivers.</summary>
internal sealed class RecordingSink : IFlvTagSink
{
    public List<(byte Type, uint Timestamp, byte[] Body)> Tags { get; } = [];

    public int Started { get; private set; }

    public int Ended { get; private set; }

    public void PublishStarted()
    {
        lock (Tags) Started++;
    }

    public void PublishEnded()
    {
        lock (Tags) Ended++;
    }

    public ValueTask WriteTagAsync(FlvTagType tagType, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        lock (Tags) Tags.Add(((byte)tagType, timestamp, body.ToArray()));
        return ValueTask.CompletedTask;
    }

    /// <summary>At each flush, how many tags had been written by then (under the lock of <see cref="Tags"/>).</summary>
    public List<int> Flushes { get; } = [];

    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        lock (Tags) Flushes.Add(Tags.Count);
        return ValueTask.CompletedTask;
    }
}

/// <summary>Keeps every formatted log line.</summary>
internal sealed class LineLogger : ILoggerProvider, ILogger
{
    public List<string> Lines { get; } = [];

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (Lines) Lines.Add($"{logLevel} {eventId.Id} {formatter(state, exception)}");
    }

    public string All()
    {
        lock (Lines) return string.Join('\n', Lines);
    }

    public void Dispose() { }
}
