"""A permutation-equivariant actor-critic for the allocation envs (one decision per customer of a cohort).

``promogym/CouponAllocation-v1`` and ``promogym/HillstromTargeting-v0`` act with ``MultiDiscrete([levels] * n)``
(a level per customer) on an observation laid out as ``n`` blocks of ``F`` per-customer features followed by
``G`` global features (budget share left, steps share left). SB3's ``MlpPolicy`` reads that as one flat vector:
it learns each customer's slot separately, its size grows with ``n``, and sb3-contrib's multi-categorical
distribution loops over ``n`` torch ``Categorical`` objects at every step (most of a training step's time).

Here one small MLP scores every customer from its own ``F`` features and the ``G`` global ones (so it can pace
by budget and time left), giving ``levels`` logits per customer; the critic pools a per-customer embedding over
the cohort (mean) and reads it with the global features. Permuting the customers permutes the logits and leaves
the value unchanged, and the parameter count does not depend on ``n``. The action distribution is one
vectorised ``Categorical`` over ``(batch, n, levels)`` logits (masks as large negative logits; log-probabilities
and entropies summed over customers).

- :class:`PerCustomerPolicy`: for sb3-contrib's ``MaskablePPO`` (reads ``action_masks()``);
- :class:`PerCustomerPPOPolicy`: its twin for plain SB3 ``PPO`` (no masks);
- both take ``item_features`` (``F``; the envs declare it as ``env.unwrapped.item_features``) and ``net_arch``
  (the shared MLPs' widths: a list for both, or ``{pi: [...], vf: [...]}``).

Both are importable by module path, so ``model.save()`` / ``MaskablePPO.load()`` work as for ``MlpPolicy``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.distributions import Categorical

SelfFactorised = TypeVar("SelfFactorised", bound="FactorisedCategoricalDistribution")
# the logit of a masked level, as sb3-contrib's MaskableCategorical: its probability is exactly 0 in float32
MASKED_LOGIT = -1e8
DEFAULT_WIDTHS = (64, 64)


# ---------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class CohortLayout:
    """How a flat observation splits: ``n_items`` blocks of ``item_features`` features, then ``global_features``;
    the action is one of ``levels`` per item."""

    n_items: int
    levels: int
    item_features: int
    global_features: int

    @classmethod
    def from_spaces(cls, observation_space: spaces.Space[Any], action_space: spaces.Space[Any],
                    item_features: Any) -> CohortLayout:
        """The layout of an env's spaces (``item_features`` F per item); ValueError naming what does not fit: a
        ``MultiDiscrete`` action with one size for all entries, a flat ``Box`` observation of at least
        ``n_items * F`` features."""
        if not isinstance(action_space, spaces.MultiDiscrete) or action_space.nvec.ndim != 1:
            raise ValueError(f"a per-customer policy needs a one-dimensional MultiDiscrete action space (a level per "
                             f"customer), got {action_space}")
        nvec = np.asarray(action_space.nvec)
        if len(nvec) == 0 or not (nvec == nvec[0]).all():
            raise ValueError(f"a per-customer policy needs the same number of levels for every customer, got the "
                             f"action space's nvec {nvec.tolist()}")
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"a per-customer policy needs a flat Box observation space, got {observation_space}")
        if item_features is None:
            raise ValueError("a per-customer policy needs policy_kwargs item_features (the features per customer of "
                             "the observation; the allocation envs declare it as env.unwrapped.item_features)")
        if isinstance(item_features, bool) or not isinstance(item_features, (int, np.integer)) or item_features < 1:
            raise ValueError(f"item_features must be an integer >= 1, got {item_features!r}")
        n, f = len(nvec), int(item_features)
        g = int(observation_space.shape[0]) - n * f
        if g < 0:
            raise ValueError(f"the observation has {observation_space.shape[0]} features, fewer than {n} customers x "
                             f"item_features {f}; item_features does not fit this env")
        return cls(n_items=n, levels=int(nvec[0]), item_features=f, global_features=g)

    def split(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(items (batch, n_items, item_features), globals (batch, global_features))`` of flat observations."""
        cut = self.n_items * self.item_features
        return obs[:, :cut].reshape(-1, self.n_items, self.item_features), obs[:, cut:]


def env_item_features(env: Any) -> int:
    """The per-customer feature count an env declares (``env.unwrapped.item_features``), checked against its spaces;
    ValueError when the env has no per-customer layout."""
    base = getattr(env, "unwrapped", env)
    features = getattr(base, "item_features", None)
    name = getattr(getattr(base, "spec", None), "id", None) or type(base).__name__
    if features is None:
        raise ValueError(f"{name} has no per-customer observation layout (no item_features attribute); policy "
                         f"per_customer is for the allocation envs (a level per customer of a cohort)")
    try:
        CohortLayout.from_spaces(env.observation_space, env.action_space, features)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return int(features)


def widen_item_statistics(values: np.ndarray, layout: CohortLayout, batches: int) -> np.ndarray:
    """Per-feature statistics of a flat observation (the normalization's means or variances) of a batch of
    ``layout.n_items / batches`` items with ``layout``'s item and global features, repeated ``batches`` times over
    ``layout.n_items`` items: a policy trained on batches ``batches`` times smaller reads the full batch with the same
    statistics for every item. ValueError when the statistics are not of such a batch."""
    values = np.asarray(values)
    f, g = layout.item_features, layout.global_features
    n, rest = divmod(layout.n_items, batches)
    if rest or values.shape != (n * f + g,):
        raise ValueError(f"{values.size} statistics are not those of {layout.n_items} items / {batches} x {f} "
                         f"features + {g} global ones")
    return np.concatenate([np.tile(values[: n * f], batches), values[n * f:]])


def env_policy_kwargs(env: Any) -> dict[str, Any]:
    """The policy kwargs a per-customer policy reads from an env: ``{"item_features": F}`` (ValueError as
    :func:`env_item_features`)."""
    return {"item_features": env_item_features(env)}


def _widths(net_arch: Any) -> tuple[list[int], list[int]]:
    """(actor widths, critic widths) of a net_arch: None (64, 64 both), a list (both) or {pi: [...], vf: [...]}."""
    if net_arch is None:
        return list(DEFAULT_WIDTHS), list(DEFAULT_WIDTHS)
    if isinstance(net_arch, dict):
        extra = set(net_arch) - {"pi", "vf"}
        if extra:
            raise ValueError(f"net_arch of a per-customer policy takes pi and vf, not {', '.join(sorted(extra))}")
        pi, vf = list(net_arch.get("pi", DEFAULT_WIDTHS)), list(net_arch.get("vf", DEFAULT_WIDTHS))
    else:
        pi = vf = list(net_arch)
    for w in (*pi, *vf):
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"net_arch must list layer widths >= 1, got {net_arch!r}")
    return [int(w) for w in pi], [int(w) for w in vf]


def _mlp(in_dim: int, widths: list[int], activation_fn: type[nn.Module]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_dim, w), activation_fn()]
        in_dim = w
    return nn.Sequential(*layers), in_dim


# ---------------------------------------------------------------------------------------- the network
class PerCustomerNet(nn.Module):
    """The actor and the critic. Actor: one MLP maps each customer's features and the global ones to that
    customer's level logits, flattened customer by customer to ``(batch, n_items * levels)`` (SB3's
    multi-categorical layout, and that of the envs' ``action_masks()``). Critic: an MLP embeds each customer,
    the embeddings are averaged over the cohort and an MLP reads the average with the global features. No
    parameter depends on ``n_items``."""

    def __init__(self, layout: CohortLayout, pi_widths: list[int], vf_widths: list[int],
                 activation_fn: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.layout = layout
        f, g = layout.item_features, layout.global_features
        self.actor, actor_dim = _mlp(f + g, pi_widths, activation_fn)
        self.logits = nn.Linear(actor_dim, layout.levels)
        self.embed, embed_dim = _mlp(f, vf_widths, activation_fn)
        hidden = vf_widths[-1] if vf_widths else embed_dim + g
        self.value_hidden = nn.Sequential(nn.Linear(embed_dim + g, hidden), activation_fn())
        self.value = nn.Linear(hidden, 1)

    def init_orthogonal(self) -> None:
        """SB3's initialisation of actor-critics: orthogonal, gain sqrt(2) for hidden layers, 0.01 for the logits
        (a near-uniform start), 1 for the value."""
        for module, gain in ((self.actor, np.sqrt(2)), (self.embed, np.sqrt(2)), (self.value_hidden, np.sqrt(2)),
                             (self.logits, 0.01), (self.value, 1.0)):
            module.apply(partial(BasePolicy.init_weights, gain=gain))

    def forward_actor(self, obs: th.Tensor) -> th.Tensor:
        """Flat level logits ``(batch, n_items * levels)`` of flat observations ``(batch, obs_dim)``."""
        items, glob = self.layout.split(obs)
        x = th.cat([items, glob[:, None, :].expand(-1, items.shape[1], -1)], dim=-1)
        return self.logits(self.actor(x)).flatten(1)

    def forward_critic(self, obs: th.Tensor) -> th.Tensor:
        """Values ``(batch, 1)`` of flat observations: invariant to the order of the customers."""
        items, glob = self.layout.split(obs)
        pooled = self.embed(items).mean(dim=1)
        return self.value(self.value_hidden(th.cat([pooled, glob], dim=-1)))

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(flat logits, values)`` of flat observations."""
        return self.forward_actor(obs), self.forward_critic(obs)


# ---------------------------------------------------------------------------------------- distributions
class FactorisedCategoricalDistribution(Distribution):
    """``n_items`` independent categoricals over ``levels`` each, as one torch ``Categorical`` of batch shape
    ``(batch, n_items)``: what SB3's ``MultiCategoricalDistribution`` computes for equal sizes, without its loop
    over one ``Categorical`` per entry. Log-probabilities and entropies are summed over the items; actions are
    ``(batch, n_items)``."""

    def __init__(self, n_items: int, levels: int) -> None:
        super().__init__()
        self.n_items, self.levels = n_items, levels
        self.masks: th.Tensor | None = None
        self._logits: th.Tensor | None = None  # (batch, n_items, levels), unmasked
        self._distribution: Categorical | None = None

    @property
    def distribution(self) -> Categorical:
        """The torch ``Categorical`` over ``(batch, n_items, levels)`` logits, masks applied (built when first
        used after the logits or masks change)."""
        if self._distribution is None:
            assert self._logits is not None, "set the distribution's logits first (proba_distribution)"
            logits = self._logits
            if self.masks is not None:
                logits = th.where(self.masks, logits, th.tensor(MASKED_LOGIT, dtype=logits.dtype, device=logits.device))
            self._distribution = Categorical(logits=logits, validate_args=False)
        return self._distribution

    @distribution.setter
    def distribution(self, value: Categorical) -> None:
        self._distribution = value

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """The layer from a customer's latent features to its level logits (shared by all customers)."""
        return nn.Linear(latent_dim, self.levels)

    def proba_distribution(self: SelfFactorised, action_logits: th.Tensor) -> SelfFactorised:
        """Set the distribution from flat logits ``(batch, n_items * levels)`` (item-major); clears any mask."""
        self._logits = action_logits.reshape(-1, self.n_items, self.levels)
        self.masks, self._distribution = None, None
        return self

    def per_item_log_prob(self, actions: th.Tensor) -> th.Tensor:
        """``(batch, n_items)`` log-probability of each item's level."""
        # Categorical.log_prob's gather, without its broadcasting of the actions to the logits' shape
        return self.distribution.logits.gather(-1, actions.reshape(-1, self.n_items, 1).long()).squeeze(-1)

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """``(batch,)`` log-probability of whole actions: the sum over items of each item's level's."""
        return self.per_item_log_prob(actions).sum(dim=1)

    def entropy(self) -> th.Tensor:
        """``(batch,)`` entropy: the sum over items (masked levels contribute nothing)."""
        log_p = self.distribution.logits  # normalised: log-probabilities
        p_log_p = log_p.exp() * log_p
        if self.masks is not None:
            p_log_p = th.where(self.masks, p_log_p, th.zeros((), dtype=p_log_p.dtype, device=p_log_p.device))
        return -p_log_p.sum(dim=(1, 2))

    def sample(self) -> th.Tensor:
        """``(batch, n_items)`` levels drawn independently per item."""
        return self.distribution.sample()

    def mode(self) -> th.Tensor:
        """``(batch, n_items)`` the most likely level of each item."""
        return self.distribution.logits.argmax(dim=-1)

    def actions_from_params(self, action_logits: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Actions of the distribution with flat logits ``action_logits``."""
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(sampled actions, their log-probabilities)`` of the distribution with flat logits ``action_logits``."""
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


class MaskableFactorisedCategoricalDistribution(FactorisedCategoricalDistribution, MaskableDistribution):
    """:class:`FactorisedCategoricalDistribution` with sb3-contrib's invalid-action masking: a masked level's
    logit is set to a large negative number, so its probability is 0; it is never sampled nor the mode (unless
    every level of an item is masked) and adds nothing to the entropy."""

    def apply_masking(self, masks: th.Tensor | np.ndarray | None) -> None:
        """Mask with flat booleans ``(batch, n_items * levels)`` (True: allowed), as ``action_masks()`` gives them;
        None restores the unmasked logits."""
        assert self._logits is not None, "set the distribution's logits first (proba_distribution)"
        self.masks = None if masks is None else th.as_tensor(masks, dtype=th.bool, device=self._logits.device
                                                             ).reshape(self._logits.shape)
        self._distribution = None


# ---------------------------------------------------------------------------------------- the policies
class _PerCustomerMixin:
    """What both policies share: the network, the distribution and the SB3 entry points that use them."""

    layout: CohortLayout
    item_features: int
    net: PerCustomerNet
    action_dist: Any
    net_arch: Any
    activation_fn: type[nn.Module]
    ortho_init: bool
    optimizer_class: type[th.optim.Optimizer]
    optimizer_kwargs: dict[str, Any]
    optimizer: th.optim.Optimizer
    action_space: spaces.Space[Any]
    observation_space: spaces.Space[Any]
    normalize_images: bool
    maskable = False

    def _set_layout(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any],
                    item_features: int | None) -> None:
        # before SB3's constructor, which calls _build; plain attributes are safe on a module not yet initialised
        self.layout = CohortLayout.from_spaces(observation_space, action_space, item_features)
        self.item_features = self.layout.item_features

    def _build(self, lr_schedule: Schedule) -> None:
        lay = self.layout
        self.action_dist = (MaskableFactorisedCategoricalDistribution if self.maskable
                            else FactorisedCategoricalDistribution)(lay.n_items, lay.levels)
        pi, vf = _widths(self.net_arch)
        self.net = PerCustomerNet(lay, pi, vf, self.activation_fn)
        if self.ortho_init:
            self.net.init_orthogonal()
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[attr-defined, call-arg]

    def _features(self, obs: PyTorchObs) -> th.Tensor:
        features = BasePolicy.extract_features(self, obs, self.features_extractor)  # type: ignore[arg-type, attr-defined]
        assert isinstance(features, th.Tensor)
        return features

    def _distribution(self, logits: th.Tensor, action_masks: Any = None) -> FactorisedCategoricalDistribution:
        dist = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            dist.apply_masking(action_masks)
        return dist

    def _forward(self, obs: th.Tensor, deterministic: bool, action_masks: Any
                 ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        logits, values = self.net(self._features(obs))
        dist = self._distribution(logits, action_masks)
        actions = dist.get_actions(deterministic=deterministic)
        log_prob = dist.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob  # type: ignore[misc]

    def _evaluate(self, obs: PyTorchObs, actions: th.Tensor, action_masks: Any
                  ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        logits, values = self.net(self._features(obs))
        dist = self._distribution(logits, action_masks)
        return values, dist.log_prob(actions), dist.entropy()

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """``(batch, 1)`` values of observations (the critic only)."""
        return self.net.forward_critic(self._features(obs))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {"observation_space": self.observation_space, "action_space": self.action_space,
                "lr_schedule": BasePolicy._dummy_schedule, "item_features": self.item_features,
                "net_arch": self.net_arch, "activation_fn": self.activation_fn, "ortho_init": self.ortho_init,
                "normalize_images": self.normalize_images, "optimizer_class": self.optimizer_class,
                "optimizer_kwargs": self.optimizer_kwargs}


class PerCustomerPolicy(_PerCustomerMixin, MaskableActorCriticPolicy):
    """The per-customer actor-critic for sb3-contrib's ``MaskablePPO``, masks applied to each customer's levels.

    ``item_features`` (required): features per customer of the observation; ``net_arch``: widths of the shared
    actor MLP and of the critic's embedding MLP (a list for both, or ``{pi: [...], vf: [...]}``; default
    ``[64, 64]``). ``activation_fn`` defaults to ReLU, not SB3's Tanh: the MLPs run on batch x cohort rows
    (16,384 per minibatch of 256 at cohort 64), where tanh costs about three times as much as ReLU on a CPU.
    ValueError when the spaces have no per-customer layout (see :class:`CohortLayout`)."""

    maskable = True

    def __init__(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any],
                 lr_schedule: Schedule, item_features: int | None = None,
                 net_arch: list[int] | dict[str, list[int]] | None = None,
                 activation_fn: type[nn.Module] = nn.ReLU, ortho_init: bool = True, normalize_images: bool = True,
                 optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
                 optimizer_kwargs: dict[str, Any] | None = None) -> None:
        self._set_layout(observation_space, action_space, item_features)
        _widths(net_arch)  # a bad net_arch fails here, with its own message
        super().__init__(observation_space, action_space, lr_schedule, net_arch=net_arch, activation_fn=activation_fn,
                         ortho_init=ortho_init, normalize_images=normalize_images, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs)

    def forward(self, obs: th.Tensor, deterministic: bool = False,
                action_masks: np.ndarray | None = None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(actions, values, log-probabilities)`` of observations, masked levels excluded."""
        return self._forward(obs, deterministic, action_masks)

    def evaluate_actions(self, obs: th.Tensor, actions: th.Tensor, action_masks: th.Tensor | None = None
                         ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """``(values, log-probabilities of actions, entropies)`` under the masks."""
        return self._evaluate(obs, actions, action_masks)

    def get_distribution(self, obs: PyTorchObs, action_masks: np.ndarray | None = None) -> MaskableDistribution:
        """The masked action distribution of observations (the actor only)."""
        dist = self._distribution(self.net.forward_actor(self._features(obs)), action_masks)
        assert isinstance(dist, MaskableDistribution)
        return dist


class PerCustomerPPOPolicy(_PerCustomerMixin, ActorCriticPolicy):
    """:class:`PerCustomerPolicy`'s twin for plain SB3 ``PPO`` (no action masks: an allocation env clips what its
    budget cannot pay). Same settings; gSDE (``use_sde``) does not apply to discrete actions."""

    def __init__(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any],
                 lr_schedule: Schedule, item_features: int | None = None,
                 net_arch: list[int] | dict[str, list[int]] | None = None,
                 activation_fn: type[nn.Module] = nn.ReLU, ortho_init: bool = True, normalize_images: bool = True,
                 optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
                 optimizer_kwargs: dict[str, Any] | None = None, use_sde: bool = False) -> None:
        if use_sde:
            raise ValueError("use_sde (gSDE) is for continuous actions; a per-customer policy acts with levels")
        self._set_layout(observation_space, action_space, item_features)
        _widths(net_arch)
        super().__init__(observation_space, action_space, lr_schedule, net_arch=net_arch, activation_fn=activation_fn,
                         ortho_init=ortho_init, normalize_images=normalize_images, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(actions, values, log-probabilities)`` of observations."""
        return self._forward(obs, deterministic, None)

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """``(values, log-probabilities of actions, entropies)``."""
        return self._evaluate(obs, actions, None)

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        """The action distribution of observations (the actor only)."""
        return self._distribution(self.net.forward_actor(self._features(obs)))


def count_parameters(policy: nn.Module) -> int:
    """The number of trainable parameters of a policy."""
    return sum(p.numel() for p in policy.parameters() if p.requires_grad)


__all__ = ["CohortLayout", "FactorisedCategoricalDistribution",
           "MaskableFactorisedCategoricalDistribution", "PerCustomerNet", "PerCustomerPPOPolicy", "PerCustomerPolicy",
           "count_parameters", "env_item_features", "env_policy_kwargs", "widen_item_statistics"]
