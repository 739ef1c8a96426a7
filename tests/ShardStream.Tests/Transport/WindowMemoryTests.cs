using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Transport;

/// <summary>
/// What a replay window really keeps alive when its chunks lie in receive slabs: a chunk that
/// stayed where it arrived pins its whole 1 MiB slab, so the window's bound has to count slabs,
/// not payload.
/// </summary>
[Collection(ReceiveSlabCollection.Name)]
public class WindowMemoryTests
{
    private static readonly TcpTransport Tcp = TcpTransport.Instance;
    private const long Bound = 8L * 1024 * 1024;

    [Fact]
    public async Task A_window_of_chunks_from_receive_slabs_pins_at_most_its_byte_bound()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var receiver = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var sender = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(sender);

        // A parent that sends one kept chunk of 8 KiB, then 1 MiB that the child drops (chunks of
        // another shard stand for duplicates, which a peer drops unchecked), 40 times: every kept
        // chunk lands in a slab of its own.
        const int rounds = 40;
        var sending = Task.Run(async () =>
        {
            for (int round = 0; round < rounds; round++)
            {
                var batch = new List<ArraySegment<byte>>();
                Add(batch, shard: 0, seq: round, new byte[8 * 1024]);
                for (int i = 0; i < 16; i++) Add(batch, shard: 1, seq: i, new byte[Protocol.MaxChunkLength]);
                await sender.SendAsync(batch, default).AsTask().WaitAsync(PipeIo.Deadline);
            }
            await sender.CloseOutputAsync();
        });

        var window = new ReplayWindow(1, Bound, TimeSpan.FromDays(1), TimeSpan.TicksPerSecond);
        var input = receiver.Pipe.Input;
        using var cts = new CancellationTokenSource(PipeIo.Deadline * 3);
        int kept = 0;
        while (true)
        {
            var result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                if (type != FrameType.Chunk) continue;
                Assert.True(ChunkHeader.TryRead(body, out var header, out var payload));
                if (header.Shard != 0) continue;
                var chunk = Chunk.FromReceived(0, (long)header.Seq, (long)header.Seq * 8192, payload);
                window.Add(chunk, 0);
                chunk.Release();
                kept++;
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) break;
        }
        await sending;
        await receiver.DisposeAsync();
        Assert.Equal(rounds, kept);

        // What the window holds, as memory: each slab one of its chunks lies in, once, and the
        // pooled buffer of every chunk that has its own.
        var held = new List<Chunk>();
        window.CopyFrom(0, 0, held);
        var slabs = held.Select(c => c.Slab).OfType<ReceiveSlab>().Distinct().ToList();
        Assert.All(slabs, s => Assert.True(s.References > 0));
        long pinned = (long)slabs.Count * ReceiveSlab.Size + held.Where(c => c.Slab is null).Sum(c => (long)c.Capacity);
        Assert.True(pinned <= Bound, $"the window keeps {held.Count} chunks ({held.Sum(c => (long)c.Length)} bytes of payload) alive in {slabs.Count} receive slabs: {pinned} bytes, its bound is {Bound}");
        Assert.Equal(pinned, window.Bytes);
        Assert.True(held.Count >= Bound / ReceiveSlab.Size / 2, $"the window kept only {held.Count} chunks");
        foreach (var c in held) c.Release();
        window.Clear();
        Assert.All(slabs, s => Assert.Equal(0, s.References));
    }

    [Fact]
    public async Task Small_chunks_are_copied_out_of_their_receive_slab()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var receiver = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var sender = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(sender);
        var batch = new List<ArraySegment<byte>>();
        Add(batch, 0, 0, new byte[Chunk.MaxCopiedPayload]);
        Add(batch, 0, 1, new byte[Chunk.MaxCopiedPayload + 1]);
        await sender.SendAsync(batch, default).AsTask().WaitAsync(PipeIo.Deadline);
        await sender.CloseOutputAsync();

        var chunks = new List<Chunk>();
        var input = receiver.Pipe.Input;
        using var cts = new CancellationTokenSource(PipeIo.Deadline);
        while (true)
        {
            var result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            while (FrameCodec.TryReadFrame(ref buffer, out _, out var body))
            {
                Assert.True(ChunkHeader.TryRead(body, out var header, out var payload));
                chunks.Add(Chunk.FromReceived(0, (long)header.Seq, 0, payload));
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) break;
        }

        Assert.Null(chunks[0].Slab);
        Assert.Equal(Chunk.MaxCopiedPayload, chunks[0].Capacity);
        Assert.NotNull(chunks[1].Slab);
        foreach (var c in chunks) c.Release();
    }

    private static void Add(List<ArraySegment<byte>> batch, byte shard, long seq, byte[] payload)
    {
        var prefix = new byte[ChunkHeader.FramePrefixLength];
        new ChunkHeader(shard, (ulong)seq, 0).WritePrefix(prefix, payload.Length);
        batch.Add(prefix);
        batch.Add(payload);
    }
}
