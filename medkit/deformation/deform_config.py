"""Configuration of ST-NeRP fitting (``medkit deform --set key=value``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeformConfig:
    """ST-NeRP fit. Coordinates: world mm and the input's time unit (s or days).

    Inside the model, ``x`` is mapped to ``[-1, 1]`` by the image's bounding box and
    ``t`` to ``(t - t_ref) / t_span`` (``t_span`` the largest ``|t - t_ref|`` seen).
    """

    seed: int = 0
    # Reference INR (prior embedding): coordinates -> reference intensity.
    ref_encoding: str = "hashgrid"  # hashgrid | fourier | siren
    ref_iters: int = 300
    ref_points: int = 8192
    ref_lr: float = 1e-2
    # Where the warped reference intensity comes from while fitting the motion:
    # "inr" = the prior embedding (ST-NeRP), "image" = trilinear samples of the volume.
    similarity_source: str = "inr"
    # Deformation INR: (x, y, z, t) -> displacement (mm).
    fourier_features: int = 48
    fourier_sigma: float = 1.5  # cycles per half-extent; low: smooth motion
    # Coarse-to-fine: Fourier features fade in by frequency over this share of the iterations (0 = off).
    coarse_to_fine: float = 0.0
    # Time (medkit/deformation/model.py): "auto" = breathing phase (periodic) when the series is one
    # cycle (a period in times.json, or phases in %), span-normalised time otherwise (longitudinal);
    # "periodic" / "span" force one. `period` overrides the series' period (same unit as the times).
    time_mode: str = "auto"
    period: float | None = None
    # Periodic time: a K-harmonic trigonometric polynomial in the breathing phase. K >= 2: Lujan's
    # sin^4 breathing curve is exactly 2 harmonics, and with K = 1 (sin^2 only) one curve cannot fit
    # the near-rest and the peak phases together (tuning patient 4dct_000: observed TRE 3.3 mm).
    time_harmonics: int = 2
    # Span time: the network sees sin/cos(pi k t_n), k = 1..span_harmonics. 6: the best held-out scan TRE on
    # the 2 tuning patients in bench/deformation_time.py (0/1/2/3/4/6 harmonics: 9.77/12.25/7.73/7.22/7.39/
    # 6.79 mm; bench/results/deformation_time-cpu.json), never the test patients. The spread is mostly
    # noise: a follow-up scan's own breath-hold and positioning cannot be predicted from the others.
    span_harmonics: int = 6
    time_in_net: bool = False  # periodic: also feed the phase to the MLP (non-separable in x and t)
    # Periodic: cosine terms only (no hysteresis: u(phi) = u(1 - phi)), or the soft version, a penalty
    # on |u(phi) - u(1 - phi)|^2 / 4 (mm^2) at the regulariser points.
    time_symmetric: bool = False
    # Periodic: each imaged frame learns its own breathing phase offset and log-amplitude (a per-image
    # surrogate, as respiratory motion models use: McClelland et al., Med Image Anal 2013); unseen times
    # use the mean cycle. Penalty weight x mean((dphase / 0.05)^2 + (log amp / 0.15)^2).
    frame_latents: bool = True
    frame_latent_weight: float = 1e-3
    # 0.01: the best held-out TRE on the sparse tuning patients (bench/deformation_time.py: 0.92 mm vs 1.75
    # with 0, 0.95 with hard symmetry, 0.95 without frame latents); bench/deformation.py refuses test cells
    # whose config differs from the tuning winner in a setting the tuning varied.
    time_symmetry_weight: float = 0.01
    width: int = 128
    depth: int = 3
    # Integrate a stationary velocity field per t (scaling and squaring). Off: on the sparse tuning patients SVF
    # fits the imaged phases better (0.41 vs 0.46 mm) but predicts the unseen ones worse (3.00 vs 0.92 mm).
    svf: bool = False
    svf_grid_factor: int = 4  # velocity evaluated on a grid this many times coarser
    svf_steps: int = 6
    # Motion iterations, from bench/deformation_curve.py (tuning patient 4dct_000, 9 moving phases, 3000-iteration
    # cosine schedule): observed TRE within ~0.03 mm of its plateau (0.44 mm) from ~700 iterations on, the rest is
    # the learning-rate anneal; a 1000-iteration schedule reaches the same plateau (0.43 mm; SVF 0.37 mm at 1.5x
    # the time: bench/results/deformation_curve-cpu-budget.json).
    iters: int = 1000
    points_per_phase: int = 2048
    edge_sampling: float = 0.7  # share of similarity points drawn by image-gradient magnitude (rest uniform)
    edge_smooth_vox: float = 1.0  # Gaussian sigma (voxels) before that gradient: noise must not set the weights
    lr: float = 3e-3
    similarity: str = "ncc"  # ncc | mse
    window_hu: tuple[float, float] = (-1000.0, 500.0)  # intensities scaled to [0, 1] in this window
    jacobian_weight: float = 0.05  # mean |1 - det J| on sampled points (IDIR default)
    bending_weight: float = 1.0  # bending energy (mm^-2, finite differences) on sampled points
    reg_points: int = 1024
    # Times of the spatial regulariser points: "span" = uniform over the observed span; "imaged" =
    # only the observed times (on the demo's 4D CT this changed the left-out-phase field little;
    # the time encoding below mattered).
    reg_times: str = "span"
    # Temporal smoothness: mean squared second difference of u in normalised time (mm),
    # sum_i |u(t-h) - 2u(t) + u(t+h)|^2 / h^4 with h = time_smooth_step (of the span), on
    # reg_points random (x, t) in the observed span. 0 = off (1e-5 on the demo case flattened
    # the peak phase: 2.7 mm predicted vs 6.6 mm true).
    time_smooth_weight: float = 0.0
    time_smooth_step: float = 0.05
    fd_step_mm: float = 2.0  # finite-difference step of the regularisers
    bf16: bool = True  # autocast on CUDA only; CPU runs float32
    checkpoint_every: int = 100
    chunk: int = 65536  # points per forward pass when predicting dense fields

    def __post_init__(self) -> None:
        """A wrong value is refused here, naming the key, not minutes into a fit (or never:
        ``time_harmonics = 0`` used to give a motion network with no output, i.e. zero motion)."""
        from ..config import ConfigError, check_ranges

        choices = {"ref_encoding": ("hashgrid", "fourier", "siren"), "similarity_source": ("inr", "image"),
                   "similarity": ("ncc", "mse"), "time_mode": ("auto", "periodic", "span"),
                   "reg_times": ("span", "imaged")}
        for key, ok in choices.items():
            if getattr(self, key) not in ok:
                raise ConfigError(f"{key} must be one of {' | '.join(ok)}, got {getattr(self, key)!r}")
        check_ranges(self, unit=("edge_sampling", "coarse_to_fine"),  # coarse_to_fine: share of the iterations
                     at_least={"time_harmonics": 1, "span_harmonics": 0, "ref_iters": 0, "ref_points": 1, "iters": 1,
                               "points_per_phase": 1, "reg_points": 1, "fourier_features": 1, "width": 1, "depth": 1,
                               "svf_grid_factor": 1, "svf_steps": 0, "chunk": 1, "checkpoint_every": 1},
                     increasing=("window_hu",))
        if self.period is not None and self.period <= 0:
            raise ConfigError(f"period must be > 0 (the breathing period in the series' time unit), got {self.period}")


@dataclass
class DeformPipelineConfig:
    """``pipeline: deform`` specs and ``medkit deform``: what to fit and where the series is.

    ``input``: a 4D NIfTI, a folder of phase volumes (``phase_XX.nii.gz`` + ``times.json``)
    or DICOM series with times. With ``generate_if_missing`` an absent ``input`` folder is
    filled by the synthetic 4D CT generator (``synth``: :class:`medkit.synth.motion.Motion4DConfig`
    fields) and its first patient is used.
    """

    name: str = "deform"
    input: str = ""
    reference: int = 0
    labels: str | None = None  # a label map on the reference to propagate (contours)
    predict_at: list[float] | None = None  # times to predict (None: every imaged time)
    generate_if_missing: bool = False
    synth: dict = field(default_factory=dict)
    model: DeformConfig = field(default_factory=DeformConfig)

    @property
    def seed(self) -> int:
        return self.model.seed
