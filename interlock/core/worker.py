"""The component worker: executes one component's schedule over a transport.

The same worker runs in every engine; only the transport (and who calls ``run``) differs.
A step's state lives in ``_StepState`` and is dropped at the update, so no graph or
activation outlives its step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from .._torch_compat import no_donated_buffers
from ..measure import memstats
from . import schedule as S
from .amp import LossScaling, scaled_step
from .backward import KeptGradients
from .clipping import WeightEMA, clip_to, squared_grad_norm
from ..heads._registry import local_loss
from .prepost import post_plan
from ..measure.profiling import recording
from ..measure.timing import clock_for, resolve
from .channel import Transport

__all__ = ["ComponentWorker", "ActionRecord", "split_microbatches", "optimizer_update"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ActionRecord:
    """One executed action: which component, what, and when (``time.perf_counter`` seconds).

    On a GPU the times are device marks until :func:`interlock.measure.timing.resolve` turns them into
    seconds (see :mod:`interlock.measure.timing`); ``duration_s`` resolves them itself.
    """

    component: int
    action: S.Action
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        if isinstance(self.start_s, float) and isinstance(self.end_s, float):
            return self.end_s - self.start_s
        (r,) = resolve([self])
        return r.end_s - r.start_s


@dataclass
class _Micro:
    """One micro-batch's state (the whole batch when the step is not cut)."""

    x: torch.Tensor | None
    y: torch.Tensor
    a_in: torch.Tensor | None = None  # leaf re-entering the boundary below (None for component 1)
    a_out: torch.Tensor | None = None  # this component's output, with its graph
    loss: torch.Tensor | None = None  # unweighted L_k (detached)
    streams: dict[int, torch.Tensor] = field(default_factory=dict)  # j -> dL_j/da_k
    input_grads: dict[int, torch.Tensor] = field(default_factory=dict)  # j -> dL_j/da_{k-1}
    kept: KeptGradients | None = None  # intermediate gradients of the input passes, for the weight pass


@dataclass
class _StepState:
    step: int
    micro: dict[int | None, _Micro]  # micro-batch index (None: the whole batch) -> its state
    position: int = 0  # index in the schedule of the next action
    driven: bool = False  # the policy hands the worker its actions one by one (no receives posted ahead)
    stash: dict[int, torch.Tensor] | None = None  # id(live parameter) -> the copy a Forward(keep="stash") used
    buffers: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (buffer, its value before a Recompute)


class ComponentWorker:
    """Runs component ``index``'s actions: forward once, head loss, streams, update."""

    def __init__(
        self,
        *,
        index: int,
        block: nn.Module,
        head: nn.Module | None,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        lr_scheduler=None,
        loss_fn: LossFn,
        loss_weight: float = 1.0,
        schedule: tuple[S.Action, ...],
        transport: Transport,
        microbatches: int = 1,
        rng_seed: int | None = None,
        record: bool = True,
        clip_norm: float = 0.0,
        ema_decay: float = 0.0,
        precision: str = "fp32",
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        self.index = index
        self.block = block
        self.head = head
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.loss_fn = loss_fn
        self.loss_weight = loss_weight
        self.schedule = schedule
        self.transport = transport
        self.microbatches = S.check_microbatches(microbatches)
        self.rng_seed = rng_seed
        self.record = record
        head_ids = set() if head is None else {id(p) for p in head.parameters()}
        block_ids = {id(p) for p in block.parameters()}
        # A parameter of both (a head's projection tied to the embedding) is in both lists: its
        # gradient is the sum of the head's loss and the block's streams, each backward adding its part.
        self._head_params = [p for p in params if id(p) in head_ids]
        self._block_params = [p for p in params if id(p) in block_ids]
        self._device = next((p.device for p in params), None)
        # Mixed precision: autocast around the block's and the head's forward only (backward passes run in the
        # dtypes autograd recorded); master weights stay fp32; activations travel in the compute dtype, streams
        # too under bf16. fp16 adds this component's own gradient scaler (interlock.core.amp), and its streams
        # travel unscaled in fp32.
        self.compute_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self._autocast_device = "cuda" if self._device is not None and self._device.type == "cuda" else "cpu"
        self.loss_scaling = LossScaling(self._device) if precision == "fp16" else None
        # torch.compile'd callables sharing the modules' parameters (the modules themselves stay as they are,
        # so checkpoints keep their keys); compilation happens lazily at the first call.
        self._call_block = block if not compile else torch.compile(block, mode=compile_mode)
        self._call_head = head if not compile or head is None else torch.compile(head, mode=compile_mode)
        self._compiled = compile
        self.clock = clock_for(self._device)  # CUDA events on a GPU, the host clock on the CPU
        # Receives posted ahead (interlock.core.prepost). next_step_follows: set by the engine when it
        # knows another step comes, so this step may post that one's first receives.
        self._post_plan, self._post_plan_of = None, None
        self._posted_ahead_for: int | None = None
        self.next_step_follows = False
        # Called before each update (the runtime sums tied copies' gradients there: interlock.network.ties).
        self.before_update: Callable[[], None] | None = None
        # What the Update action does instead of the optimizer step (a policy that applies gradients late).
        self.apply_update: Callable[[], None] | None = None
        self._state: _StepState | None = None
        # Steps begun and put aside (hold) until the policy resumes them: their backward comes in a later step.
        self._held: dict[int, _StepState] = {}
        self.records: list[ActionRecord] = []
        # Clipping by norm (0: off). sum_squares: this component's squared gradient norm -> the one clipped to
        # (None: its own, the per-component rule; the runtime sets a sum over components for the global rule).
        self.clip_norm = clip_norm
        self.sum_squares: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.grad_norm: torch.Tensor | None = None  # the last update's pre-clip norm of this component's gradient
        self.ema = WeightEMA(self.params, ema_decay) if ema_decay > 0 else None
        self._run = {
            S.RecvActivation: self._recv_activation,
            S.Forward: self._forward,
            S.Recompute: self._recompute,
            S.SendActivation: self._send_activation,
            S.HeadLoss: self._head_loss,
            S.RecvStream: self._recv_stream,
            S.InputGrad: self._input_grad,
            S.FullGrad: self._full_grad,
            S.WeightGrad: self._weight_grad,
            S.SendStream: self._send_stream,
            S.Update: self._update,
        }
        optimizer.zero_grad(set_to_none=True)

    # -- driving -------------------------------------------------------------------------

    def begin_step(self, x: torch.Tensor | None, y: torch.Tensor, step: int, *, driven: bool = False) -> None:
        """Begin step ``step`` on its batch (``x`` for component 1, else None). ``driven``: the policy runs the
        actions it chooses (not ``schedule``) and may :meth:`hold` the step; no receives are posted ahead."""
        if self._state is not None:
            raise RuntimeError(f"component {self.index + 1} began step {step} before ending or holding step {self._state.step}")
        y = self._to_device(y)
        m = self.microbatches
        if m == 1:
            micro = {None: _Micro(x=x, y=y)}
        else:
            ys = split_microbatches(y, m)
            xs = [None] * m if x is None else split_microbatches(x, m)
            micro = {i: _Micro(x=xs[i], y=ys[i]) for i in range(m)}
        self._state = _StepState(step=step, micro=micro, driven=driven)
        self.records = []
        if driven:
            return
        if self._post_plan_of is not self.schedule:
            self._post_plan, self._post_plan_of = post_plan(self.schedule, self.index), self.schedule
        if self._posted_ahead_for != step:  # the previous step did not post this one's receives ahead
            self._post(self._post_plan.next_step_receives())
        self._posted_ahead_for = None

    def run(self, action: S.Action) -> None:
        start = self.clock.now() if self.record else None
        if recording() or memstats.enabled():  # profile_steps, track.memory
            self._run_watched(action)
        else:
            self._run[type(action)](action)
        if self.record:
            self.records.append(ActionRecord(self.index, action, start, self.clock.now()))
        st = self._state
        if st is not None and not st.driven:  # receives that may be posted now (interlock.core.prepost)
            self._post(self._post_plan.same.get(st.position, ()))
            if self.next_step_follows and st.position in self._post_plan.next:
                self._post(self._post_plan.next[st.position])
                self._posted_ahead_for = st.step + 1
            st.position += 1

    def _run_watched(self, action: S.Action) -> None:
        with contextlib.ExitStack() as watch:
            if recording():  # kernels and messages under the action that launched them
                watch.enter_context(torch.profiler.record_function(f"{action.kind} (component {self.index + 1})"))
            if memstats.enabled():  # what autograd keeps for this component's backward
                watch.enter_context(memstats.meter(self.index, [*self._block_params, *self._head_params]).hooks())
            self._run[type(action)](action)

    def _post(self, receives) -> None:
        for src, tag in receives:
            self.transport.post(src=src, dst=self.index, tag=tag)

    def run_step(self, x: torch.Tensor | None, y: torch.Tensor, step: int) -> torch.Tensor | None:
        """Run the whole schedule (blocking transports); returns the detached loss L_k or None."""
        self.begin_step(x, y, step)
        for action in self.schedule:
            self.run(action)
        return self.end_step()

    def run_alone(self, inp: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One step of this component on its own, on the input ``inp`` (the batch for component 1, else
        a_{k-1}): its schedule with the boundary messages served in this process (its transport must
        be a loopback, :class:`~interlock.runtime.transport.InMemoryTransport`). Returns the detached
        loss L_k (None without a head) and the output a_k (None for the last component, which sends none).

        The policies whose components train on inputs they did not receive from a neighbour in the
        same step (async DGL's replay buffers, sequential greedy's frozen components) use this.
        """
        k = self.index
        self.begin_step(inp if k == 0 else None, y, step)
        if k > 0:
            self.transport.send(inp, src=k - 1, dst=k, tag=S.activation_tag())
        for action in self.schedule:
            self.run(action)
        sends_up = any(a.send_to(k) == k + 1 for a in self.schedule)
        out = self.transport.recv(src=k, dst=k + 1, tag=S.activation_tag()) if sends_up else None
        return self.end_step(), out

    @torch.no_grad()
    def forward_frozen(self, inp: torch.Tensor) -> torch.Tensor:
        """This component's output a_k with its weights fixed: eval mode (BatchNorm's running statistics,
        no dropout), no autograd, nothing recorded. A component past its quota (async DGL) and a frozen stage
        (sequential greedy) feed the components above with it."""
        was_training = self.block.training
        self.block.eval()
        try:
            with self._compute():  # (the compute dtype and the compiled block, as in training)
                return self._call_block(self._to_device(inp))
        finally:
            self.block.train(was_training)

    def end_step(self) -> torch.Tensor | None:
        """The step's loss L_k (detached; None without a head): the mean over its micro-batches."""
        loss = self._loss()
        self._state = None
        return loss

    def _loss(self) -> torch.Tensor | None:
        losses = [mb.loss for mb in self._state.micro.values()]
        if losses[0] is None:
            return None
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

    # -- held steps (a backward that comes in a later step: Hogwild, weight stashing) -----------

    def hold(self) -> torch.Tensor | None:
        """Put the driven step begun last aside until :meth:`resume`; returns its loss L_k so far (as
        :meth:`end_step`), which a report-only ``HeadLoss(grad=False)`` gives at the forward."""
        st = self._state
        if st is None or not st.driven:
            raise RuntimeError(f"component {self.index + 1} can hold only a step begun with driven=True")
        loss = self._loss()
        self._held[st.step] = st
        self._state = None
        return loss

    def resume(self, step: int) -> None:
        """Take held step ``step`` back up: the actions run from here belong to it (records start afresh)."""
        if self._state is not None:
            raise RuntimeError(f"component {self.index + 1} resumes step {step} while step {self._state.step} is running")
        if step not in self._held:
            raise KeyError(f"component {self.index + 1} holds no step {step} (it holds {sorted(self._held)})")
        self._state = self._held.pop(step)
        self.records = []

    @property
    def held_steps(self) -> list[int]:
        """The steps put aside with :meth:`hold`, oldest first."""
        return sorted(self._held)

    def held_streams(self, step: int) -> dict[int, torch.Tensor]:
        """The streams (loss j -> dL_j/da_k) held step ``step`` has received so far (its whole batch)."""
        return dict(self._held[step].micro[None].streams) if None in self._held[step].micro else {}

    def held_state(self) -> dict:
        """The held steps as plain tensors, for a checkpoint. Only steps whose forward kept no graph
        (``Forward(keep="input")``) can be written: a graph or a weight stash does not survive a file."""
        out = {}
        for step, st in sorted(self._held.items()):
            if st.stash is not None or any(mb.a_out is not None and mb.a_out.requires_grad for mb in st.micro.values()):
                raise RuntimeError(
                    f"component {self.index + 1} holds step {step} with its autograd graph: a checkpoint can hold only "
                    f"batches kept as inputs; write it where the pipeline is drained"
                )
            out[step] = {"position": st.position, "micro": {
                -1 if i is None else i: {"x": mb.x, "a_in": None if mb.a_in is None else mb.a_in.detach(), "y": mb.y,
                                         "loss": mb.loss, "streams": dict(mb.streams)}
                for i, mb in st.micro.items()}}
        return out

    def load_held_state(self, state: dict) -> None:
        """The held steps of :meth:`held_state` (a checkpoint's), in place of those held now."""
        self._held = {}
        for step, part in state.items():
            micro = {}
            for i, m in part["micro"].items():
                a_in = m["a_in"]
                if a_in is not None:
                    a_in = self._to_device(a_in).detach().requires_grad_(a_in.is_floating_point())
                micro[None if i == -1 else i] = _Micro(x=self._to_device(m["x"]), y=self._to_device(m["y"]), a_in=a_in,
                                                       loss=m["loss"], streams={j: self._to_device(g) for j, g in m["streams"].items()})
            self._held[int(step)] = _StepState(step=int(step), micro=micro, position=int(part["position"]), driven=True)

    # -- actions ---------------------------------------------------------------------------

    def _mb(self, action) -> _Micro:
        return self._state.micro[action.mb]

    def _recv_activation(self, action: S.RecvActivation) -> None:
        a = self._to_device(self.transport.recv(src=self.index - 1, dst=self.index, tag=S.activation_tag(action.mb)))
        # A fresh leaf: gradients stop at the boundary and are sent on explicitly as streams.
        self._mb(action).a_in = a.detach().requires_grad_(a.is_floating_point())

    def _forward(self, action: S.Forward) -> None:
        mb = self._mb(action)
        inp = self._to_device(mb.x) if self.index == 0 else mb.a_in
        if action.keep == "input":  # no graph: a Recompute at the weights of the backward's time takes it up
            mb.x = inp
            with torch.no_grad(), self._rng(self._state.step, salt=0, mb=action.mb, always=True), self._compute():
                mb.a_out = self._call_block(inp)
            return
        with self._rng(self._state.step, salt=0, mb=action.mb), self._compute():
            if action.keep == "stash":
                mb.a_out = self._stashed_block()(inp)
            else:
                mb.a_out = self._call_block(inp)
        mb.x = None

    def _recompute(self, action: S.Recompute) -> None:
        st, mb = self._state, self._mb(action)
        if st.buffers is None:  # (restored at the update: the statistics move at the forward only)
            st.buffers = [(b, b.clone()) for m in (self.block, self.head) if m is not None for b in m.buffers()]
        inp = mb.x if self.index == 0 else mb.a_in
        with self._rng(st.step, salt=0, mb=action.mb, always=True), self._compute():
            mb.a_out = self._call_block(inp)

    def _stashed_block(self):
        """The block as a function of this step's copy of the component's weights (made at the step's first
        forward: PipeDream's weight stash); a parameter tied between block and head has one copy."""
        st = self._state
        if st.stash is None:
            st.stash = {id(p): p.detach().clone().requires_grad_(p.requires_grad) for p in self.params}
        named = {n: st.stash[id(p)] for n, p in self.block.named_parameters() if id(p) in st.stash}
        return lambda inp: functional_call(self.block, named, (inp,))

    def _weights(self, live: list[nn.Parameter]) -> list[torch.Tensor]:
        """The tensors a backward differentiates: the live parameters, or this step's stashed copies."""
        stash = self._state.stash
        return live if stash is None else [stash[id(p)] for p in live]

    def _send_activation(self, action: S.SendActivation) -> None:
        self.transport.send(
            self._wire(self._mb(action).a_out.detach()), src=self.index, dst=self.index + 1, tag=S.activation_tag(action.mb)
        )

    def _head_loss(self, action: S.HeadLoss) -> None:
        mb = self._mb(action)
        h_in = mb.a_out.detach().requires_grad_(action.stream)
        with self._rng(self._state.step, salt=1, mb=action.mb), self._compute(), torch.set_grad_enabled(action.grad):
            loss = local_loss(self._call_head, h_in, mb.y, self.loss_fn)  # loss_fn(head(h), y) unless the head owns its loss
        mb.loss = loss.detach()
        if not action.grad:
            return
        inputs = self._head_params + ([h_in] if action.stream else [])
        if inputs and loss.requires_grad:
            # The step's loss is the mean over its m micro-batches of their (mean) losses.
            scale = self.loss_weight if self.microbatches == 1 else self.loss_weight / self.microbatches
            weighted = loss if scale == 1.0 else loss * scale
            if self.loss_scaling is not None:
                weighted = self.loss_scaling.scale(weighted)
            stash = self._state.stash
            if stash is None:
                torch.autograd.backward(weighted, inputs=inputs)
            else:
                # The head's graph is used up here, at the forward's weights, so the head needs no copy of its
                # own: its gradient waits on the stash with the block's until the (late) update.
                got = torch.autograd.grad(weighted, inputs, allow_unused=True)
                for p, g in zip(self._head_params, got):
                    if g is not None:
                        c = stash[id(p)]
                        c.grad = g if c.grad is None else c.grad + g
                if action.stream:
                    h_in.grad = got[-1]
        if action.stream:
            mb.streams[self.index] = h_in.grad if h_in.grad is not None else torch.zeros_like(h_in)

    def _recv_stream(self, action: S.RecvStream) -> None:
        tag = S.stream_tag(action.loss, action.hops_left, action.mb)
        grad = self._to_device(self.transport.recv(src=self.index + 1, dst=self.index, tag=tag))
        if self.loss_scaling is not None:  # a true gradient: to this component's scale (interlock.core.amp)
            grad = self.loss_scaling.scale(grad.float())
        a_out = self._mb(action).a_out
        # A stream arrives in the wire's dtype; autograd wants it in the dtype of the output it flows into.
        self._mb(action).streams[action.loss] = grad if a_out is None else grad.to(a_out.dtype)

    def _input_grad(self, action: S.InputGrad) -> None:
        mb = self._mb(action)
        if action.keep:
            (j,) = action.losses
            if mb.kept is None:
                mb.kept = KeptGradients(mb.a_out, mb.a_in, self._block_params)
            mb.input_grads[j] = mb.kept.input_grad(mb.a_out, mb.a_in, mb.streams[j])
        elif len(action.losses) == 1 or self._compiled:
            # (compiled graphs' backward does not run under vmap, so batched streams take one pass each there)
            for i, j in enumerate(action.losses):
                last = action.last and i == len(action.losses) - 1
                (mb.input_grads[j],) = torch.autograd.grad(mb.a_out, mb.a_in, mb.streams[j], retain_graph=not last)
        else:
            vs = torch.stack([mb.streams[j] for j in action.losses])
            (gs,) = torch.autograd.grad(mb.a_out, mb.a_in, vs, retain_graph=not action.last, is_grads_batched=True)
            mb.input_grads.update(zip(action.losses, gs.unbind(0)))
        self._release(mb, action.last)

    def _full_grad(self, action: S.FullGrad) -> None:
        mb = self._mb(action)
        # backward(inputs=...) accumulates into the parameters' .grad and the input leaf's .grad.
        torch.autograd.backward(
            mb.a_out, mb.streams[action.loss], inputs=[mb.a_in, *self._weights(self._block_params)], retain_graph=not action.last
        )
        mb.input_grads[action.loss] = mb.a_in.grad
        mb.a_in.grad = None
        self._release(mb, action.last)

    def _weight_grad(self, action: S.WeightGrad) -> None:
        mb = self._mb(action)
        if self._block_params and mb.a_out.requires_grad:
            if action.reuse and mb.kept is not None and mb.kept.usable:
                # Only the weight part: the input passes kept the gradients where the parameters enter.
                mb.kept.weight_pass(retain_graph=not action.last)
            else:
                v = mb.streams[action.losses[0]]
                for j in action.losses[1:]:
                    v = v + mb.streams[j]
                torch.autograd.backward(mb.a_out, v, inputs=self._weights(self._block_params), retain_graph=not action.last)
        self._release(mb, action.last)

    def _send_stream(self, action: S.SendStream) -> None:
        grad = self._mb(action).input_grads.pop(action.loss)
        tag = S.stream_tag(action.loss, action.hops_left, action.mb)
        if self.loss_scaling is not None:  # fp16: the true gradient, in fp32 (interlock.core.amp)
            self.transport.send(self.loss_scaling.unscale_stream(grad), src=self.index, dst=self.index - 1, tag=tag)
        else:
            self.transport.send(self._wire(grad), src=self.index, dst=self.index - 1, tag=tag)

    def _update(self, _: S.Update) -> None:
        st = self._state
        if st.stash is not None:  # the stashed copies' gradients are the live weights' (PipeDream)
            for p in self.params:
                g = st.stash[id(p)].grad
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            st.stash = None
        if st.buffers is not None:
            with torch.no_grad():
                for b, before in st.buffers:
                    b.copy_(before)
            st.buffers = None
        if self.before_update is not None:
            self.before_update()
        if self.apply_update is not None:
            self.apply_update()
        else:
            self.step_optimizer()
        for mb in self._state.micro.values():
            mb.a_in = mb.a_out = mb.kept = None
            mb.streams.clear()

    def step_optimizer(self, grads: "list[torch.Tensor | None] | None" = None) -> None:
        """The one optimizer update of a component: set ``grads`` (one per parameter of the optimizer, in its
        order) if given, clip, step the optimizer, update the EMA, zero the gradients, step the LR scheduler.
        Under fp16 the gradient scaler steps it, and counts the update when it skips it (an inf/NaN gradient)."""
        scaling = self.loss_scaling
        if not optimizer_update(self.optimizer, self.lr_scheduler, grads, None if scaling is None else scaling.scaler,
                                before_step=self._clip if self.clip_norm > 0 else None,
                                after_step=None if self.ema is None else self.ema.update):
            scaling.skipped_steps += 1

    def _clip(self) -> None:
        params = self.params
        sq = squared_grad_norm(params)
        self.grad_norm = sq.sqrt()
        clip_to(params, self.clip_norm, sq if self.sum_squares is None else self.sum_squares(sq))

    def grad_squares(self) -> torch.Tensor:
        """This component's squared gradient norm as it stands (the local runtime's global sum reads it)."""
        return squared_grad_norm(self.params)

    @property
    def params(self) -> list[nn.Parameter]:
        """The optimizer's parameters, in its order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # -- helpers ---------------------------------------------------------------------------

    def _compute(self):
        """The forward's context: autocast to the compute dtype (unless fp32), and compiled graphs built without
        donated buffers (several streams backpropagate through one graph: interlock._torch_compat)."""
        stack = contextlib.ExitStack()
        if self.compute_dtype is not torch.float32:
            stack.enter_context(torch.autocast(self._autocast_device, dtype=self.compute_dtype))
        if self._compiled:
            stack.enter_context(no_donated_buffers())
        return stack

    def _wire(self, t: torch.Tensor) -> torch.Tensor:
        """A boundary message in the compute dtype (bf16: half the bytes of fp32)."""
        return t.to(self.compute_dtype) if t.is_floating_point() and self.compute_dtype is not torch.float32 else t

    @staticmethod
    def _release(mb: _Micro, last: bool) -> None:
        if last:  # the graph is freed; drop the references that kept activations alive
            mb.streams.clear()
            mb.kept = None

    def _to_device(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or self._device is None:
            return t
        return t.to(self._device, non_blocking=True)

    def _rng(self, step: int, *, salt: int, mb: int | None = None, always: bool = False):
        """Per-(component, step, micro-batch) random state, so dropout draws the same masks on every engine.
        ``always``: seeded without an ``rng_seed`` too (seed 0), for a forward and its Recompute to agree."""
        if self.rng_seed is None and not always:
            return contextlib.nullcontext()
        seed = 0 if self.rng_seed is None else self.rng_seed
        key = (seed, step, self.index, salt) if mb is None else (seed, step, self.index, salt, mb)
        return _seeded(hash(key) & 0x7FFF_FFFF_FFFF_FFFF, self._device)


def optimizer_update(optimizer: torch.optim.Optimizer, lr_scheduler=None, grads=None, scaler=None, *,
                     before_step: Callable[[], None] | None = None, after_step: Callable[[], None] | None = None) -> bool:
    """One update: the given gradients (one per parameter of ``optimizer``, None to keep ``.grad``), unscale,
    ``before_step`` (clipping), the optimizer's step, ``after_step`` (the weights' EMA, only when it stepped),
    gradients zeroed (set to None), the LR scheduler's step. Every policy updates through it.

    ``scaler``: fp16's ``torch.amp.GradScaler`` (interlock.core.amp): the gradients are unscaled first, and the
    step is skipped when one is inf/NaN (the LR schedule steps regardless: it counts steps, not updates).
    Returns whether the optimizer stepped."""
    if grads is not None:
        for p, g in zip((p for group in optimizer.param_groups for p in group["params"]), grads):
            p.grad = g
    if scaler is not None:
        scaler.unscale_(optimizer)  # true gradients from here on (clipping reads them)
    if before_step is not None:
        before_step()
    stepped = scaled_step(optimizer, scaler)
    if stepped and after_step is not None:
        after_step()
    optimizer.zero_grad(set_to_none=True)
    if lr_scheduler is not None:
        lr_scheduler.step()
    return stepped


def split_microbatches(t: torch.Tensor, m: int) -> tuple[torch.Tensor, ...]:
    """``t`` cut along its first (batch) dimension into ``m`` equal micro-batches."""
    batch = t.shape[0] if t.dim() else 0
    if batch % m or batch == 0:
        raise ValueError(
            f"a batch of {batch} examples does not split into {m} equal micro-batches; use a batch size "
            f"divisible by microbatches={m} (unequal micro-batches would weight examples unequally)"
        )
    return t.split(batch // m)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device | None):
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield
