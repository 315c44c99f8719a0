"""What can go wrong, in the service's own terms: no HTTP here (`app/api/problems.py` maps these)."""


class ServiceError(Exception):
    """Base of the errors the service reports to its callers."""

    title = "Service error"


class ModelLoadError(ServiceError):
    """The model repository holds no servable model at the configured place."""

    title = "Model cannot be loaded"


class VersionNotFound(ServiceError):
    """A model version or version label that is not being served (unknown, loading, or failed)."""

    title = "Model version not found"


class PayloadTooLarge(ServiceError):
    """A request body larger than MAX_UPLOAD_BYTES, refused before it is read."""

    title = "Request body too large"


class InvalidImage(ServiceError):
    """An upload that cannot be decoded: truncated or corrupt."""

    title = "Invalid image"

    def __init__(self, filename: str, detail: str) -> None:
        super().__init__(f"{filename!r}: {detail}")
        self.filename = filename
        self.detail = detail


class UnsupportedImage(InvalidImage):
    """An upload that is not an image, or not in one of the supported formats."""

    title = "Unsupported image format"


class ImageTooLarge(InvalidImage):
    """An image with more pixels than MAX_IMAGE_PIXELS, refused before its pixels are decoded."""

    title = "Image too large"


class ReportNotFound(ServiceError):
    """The served version has no training report, or no report file of that name."""

    title = "No such report"


class Unauthorized(ServiceError):
    """API keys are configured and the request carries none of them."""

    title = "Unauthorized"
    challenge = 'Bearer realm="inception-v2-service"'


class BodyTimedOut(ServiceError):
    """A request body that did not arrive within BODY_TIMEOUT_S of its headers."""

    title = "Request body too slow"


class TooManyFiles(ServiceError):
    """More images in one request than MAX_FILES."""

    title = "Too many files"


class Overloaded(ServiceError):
    """The queue of images waiting for the model is full."""

    title = "Overloaded"
    retry_after_s = 1


class RequestTimedOut(ServiceError):
    """An image waited longer than REQUEST_TIMEOUT_MS for the model."""

    title = "Timed out waiting for the model"
    retry_after_s = 1


class ModelNotReady(ServiceError):
    """The model is not loaded yet, or the service is shutting down."""

    title = "Model not ready"
    retry_after_s = 1


class RequestAbandoned(ServiceError):
    """The client disconnected before its answer was ready; its images were dropped."""

    title = "Client closed request"


class InferenceFailed(ServiceError):
    """The model raised on a batch that held only this image."""

    title = "Inference failed"


class ModelNotFound(ServiceError):
    """A request for a model this service does not serve (a protocol path names the model)."""

    title = "Model not found"


class InvalidInput(ServiceError):
    """A protocol request (TF Serving's or the Open Inference Protocol's) the model cannot take."""

    title = "Invalid input"
