"""The service's Prometheus metrics, in a registry of their own (one per app)."""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latencies (seconds): from a cached answer (~1 ms) to a large photo on a busy CPU.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class Metrics:
    """Requests and latencies by route and status, faces detected and encoded, gallery size."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "tripletface_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self.latency = Histogram(
            "tripletface_request_duration_seconds",
            "Time from request to answer",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.detected = Counter(
            "tripletface_faces_detected", "Faces found in uploaded photos", registry=self.registry
        )
        self.encoded = Counter(
            "tripletface_faces_encoded",
            "Face chips run through the encoder",
            registry=self.registry,
        )
        self.batch = Histogram(
            "tripletface_encoder_batch_faces",
            "Chips per encoder pass (concurrent requests share one)",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.people = Gauge(
            "tripletface_gallery_people", "People in the gallery", registry=self.registry
        )
        self.faces = Gauge(
            "tripletface_gallery_faces", "Enrolled faces in the gallery", registry=self.registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def text(self) -> bytes:
        """Every metric in Prometheus's text exposition format."""
        return generate_latest(self.registry)
