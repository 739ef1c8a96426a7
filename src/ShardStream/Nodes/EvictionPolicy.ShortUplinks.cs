using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>
/// Parents whose upload was found not to carry their children: for a while, their findings are
/// evidence against them, never against a child's download.
/// </summary>
internal sealed partial class EvictionPolicy
{
    /// <summary>
    /// How long a parent whose children were found slow together (event 910) is taken for one
    /// whose upload does not carry them: as long as <see cref="ExcuseWindow"/>.
    /// </summary>
    internal static readonly TimeSpan ShortUplinkWindow = ExcuseWindow;

    /// <summary>
    /// When each peer's children were last found slow together (event 910 naming it as the parent).
    /// Under the gate; an entry goes with its peer (<see cref="Forget"/>).
    /// </summary>
    private readonly Dictionary<int, long> _uplinkShort = [];

    /// <summary>Notes that <paramref name="parent"/>'s children were found slow together now (event 910). Under the gate.</summary>
    private void NoteUplinkShort(int parent, long now) => _uplinkShort[parent] = now;

    /// <summary>
    /// True when <paramref name="parent"/> is a peer whose children were found slow together within
    /// <see cref="ShortUplinkWindow"/> (<paramref name="since"/>: how long ago). Such a parent has
    /// shown that its upload does not carry its children: a child it finds slow may be only held
    /// back by it. Under the gate.
    /// </summary>
    private bool UplinkFoundShort(int parent, long now, out TimeSpan since)
    {
        since = TimeSpan.Zero;
        if (parent == Planner.Source || !_uplinkShort.TryGetValue(parent, out long at)) return false;
        since = time.GetElapsedTime(at, now);
        if (since < ShortUplinkWindow) return true;
        _uplinkShort.Remove(parent);
        return false;
    }
}
