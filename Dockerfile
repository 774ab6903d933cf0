# Static hop binary in a small non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/hop ./cmd/hop

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hop /usr/local/bin/hop
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/hop"]
CMD ["-c", "/etc/hop/envoy.yaml"]
