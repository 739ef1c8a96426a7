using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace ShardStream.Cli;

/// <summary>
/// Ctrl-C and SIGTERM of <c>shardstream coordinator</c>. The first one ends the stream: the source
/// (stdin or an RTMP publish) is taken as ended at the bytes read so far, the signed End goes out
/// as at the end of the input, the coordinator waits for its peers to finish and exits 0, so that
/// viewers finish the stream and exit 0 too. Without it an RTMP ingest, which has no end of input,
/// could never end its stream cleanly. The wait for the peers is cut at <see cref="DrainBound"/>
/// after the signal, and the process returns at <see cref="ProcessBound"/> whatever it is doing.
/// A second signal (at least <see cref="RepeatWindow"/> later) stops waiting at once. A signal before the source is read (the hold for
/// <c>--min-peers</c>) stops the coordinator at once, as before. A crash or SIGKILL sends no End:
/// viewers keep joining again, and a coordinator restarted with the same key goes on with them.
/// </summary>
internal sealed class CoordinatorStop : IDisposable
{
    /// <summary>After the first signal, the wait for the peers to finish is cut here.</summary>
    public static readonly TimeSpan DrainBound = TimeSpan.FromSeconds(15);

    /// <summary>After the first signal the command returns by then (as the other commands do: Program.cs).</summary>
    public static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(20);

    private readonly CancellationTokenSource _quit = new();
    private readonly TaskCompletionSource<int> _forced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<PosixSignalRegistration> _registrations = [];
    private readonly Lock _lock = new();
    private EndableSource? _source;
    private ILogger? _log;
    private int _signals;
    private long _firstSignalAt;
    private int _signalExitCode;

    /// <summary>
    /// A signal this soon after the first is the same stop delivered twice (a wrapper such as
    /// <c>timeout</c> or <c>dotnet run</c> passing on the Ctrl-C the terminal sent to the whole
    /// process group), not a second Ctrl-C, and is ignored.
    /// </summary>
    public static readonly TimeSpan RepeatWindow = TimeSpan.FromMilliseconds(500);

    public CoordinatorStop()
    {
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
            _registrations.Add(PosixSignalRegistration.Create(signal, OnSignal));
    }

    /// <summary>Cancelled to stop the coordinator at once (a second signal, a signal before streaming, or <see cref="DrainBound"/>).</summary>
    public CancellationToken Quit => _quit.Token;

    /// <summary>The source the coordinator reads, which the first signal ends.</summary>
    public Stream Source(Stream inner, string name, ILogger log)
    {
        lock (_lock)
        {
            _source = new EndableSource(inner, name);
            _log = log;
            return _source;
        }
    }

    /// <summary>
    /// Runs the command body; returns its exit code, or 130/143 if it has not returned
    /// <see cref="ProcessBound"/> after the first signal. A body stopped by a signal (its 130, the
    /// code of a cancelled command) exits with that signal's code: 130 for Ctrl-C, 143 for SIGTERM.
    /// </summary>
    public async Task<int> RunAsync(Func<CancellationToken, Task<int>> body)
    {
        var run = body(Quit);
        int code = await await Task.WhenAny(run, _forced.Task).ConfigureAwait(false);
        int signalCode = Volatile.Read(ref _signalExitCode);
        return code == 130 && signalCode != 0 ? signalCode : code;
    }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        string name = context.Signal == PosixSignal.SIGINT ? "Ctrl-C (SIGINT)" : "SIGTERM";
        int exitCode = context.Signal == PosixSignal.SIGINT ? 130 : 143;
        EndableSource? source;
        ILogger? log;
        int signals;
        lock (_lock)
        {
            if (_signals == 1 && Stopwatch.GetElapsedTime(_firstSignalAt) < RepeatWindow) return;
            signals = ++_signals;
            if (signals == 1) _firstSignalAt = Stopwatch.GetTimestamp();
            if (signals <= 2) _signalExitCode = exitCode;
            source = _source;
            log = _log;
        }
        if (signals == 1)
        {
            _ = Task.Delay(ProcessBound).ContinueWith(_ => _forced.TrySetResult(exitCode), TaskScheduler.Default);
            if (source is { Reading: true } && log is not null)
            {
                var (bytes, alreadyEnded) = source.End();
                // The source's own end came first: its End is out already, and the coordinator waits for its peers.
                if (alreadyEnded) CliLog.AlreadyEndedOnSignal(log, bytes, source.Name, name);
                else CliLog.EndingOnSignal(log, bytes, source.Name, name);
                _quit.CancelAfter(DrainBound);
                return;
            }
        }
        else if (signals == 2 && log is not null)
        {
            CliLog.QuittingOnSignal(log, name);
        }
        _quit.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _quit.Dispose();
    }

    /// <summary>
    /// A source stream that <see cref="End"/> ends: reads return 0 from then on. A pending read of
    /// stdin cannot be cancelled, so the inner stream is read into a buffer of this stream's own
    /// and copied out: a read still pending at the end is left behind, and what it reads later is
    /// dropped (it never touches a buffer the coordinator has let go of).
    /// </summary>
    private sealed class EndableSource(Stream inner, string name) : Stream
    {
        private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Lock _lock = new();
        private byte[] _buffer = [];
        private Task<int>? _pending;
        private long _bytes;
        private bool _isEnded;
        private bool _innerEnded;

        public string Name => name;

        /// <summary>The coordinator has started reading: the stream has started.</summary>
        public bool Reading { get; private set; }

        /// <summary>Ends the stream; returns the bytes handed out, the stream's length, and whether the inner stream had ended already.</summary>
        public (long Bytes, bool AlreadyEnded) End()
        {
            lock (_lock)
            {
                _isEnded = true;
                _ended.TrySetResult();
                return (_bytes, _innerEnded);
            }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Reading = true;
            if (buffer.Length == 0) return 0;
            if (_pending is null)
            {
                if (_isEnded) return 0;
                if (_buffer.Length < buffer.Length) _buffer = new byte[buffer.Length];
                _pending = inner.ReadAsync(_buffer.AsMemory(0, buffer.Length), CancellationToken.None).AsTask();
            }
            if (!_pending.IsCompleted) await Task.WhenAny(_pending, _ended.Task).WaitAsync(cancellationToken).ConfigureAwait(false);
            lock (_lock)
            {
                if (_isEnded) return 0;
                int n = _pending.GetAwaiter().GetResult();
                _pending = null;
                _buffer.AsSpan(0, n).CopyTo(buffer.Span);
                _bytes += n;
                if (n == 0) _innerEnded = true;
                return n;
            }
        }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
