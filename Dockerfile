# The jobmill binary in a small image. Build: docker build -t jobmill .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/jobmill ./cmd/jobmill

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/jobmill /usr/local/bin/jobmill
ENTRYPOINT ["/usr/local/bin/jobmill"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
